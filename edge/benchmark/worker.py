"""One benchmark measurement, run in a fresh process so that load time and peak RSS are its own.

``python -m edge.benchmark.worker JSON`` prints one JSON result line. Modes:
invoke (the bare engine), pipeline (source -> preprocess -> infer -> decision),
e2e (the daemon's own loop with MQTT, timed at a subscriber), and probe (the library's best rate on
plain matrix products of the row's data type, from which the measured floor is computed).
"""

from __future__ import annotations

import atexit
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.benchmark.arrivals import Arrivals
from edge.classifier import Classifier
from edge.formats.bundle import Bundle
from edge.runtime import load_model_file, open_engine
from edge.runtime import onnx as onnx_engine
from edge.sources import Capture, open_source
from edge.sources.scene import render_sample
from edge.stats import summary
from edge.vision.decision import Decider
from edge.wire.topics import Topic, under


def rss_mb() -> float:
    """Current resident set size."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_probe(spec: dict, seconds: float = 0.5) -> dict:
    """The library's best rate on plain matrix products of the row's data type: the bundle's peak probe
    run by the same backend, threads and delegate. The best of many runs catches the CPU at its fastest."""
    bundle = Bundle.open(spec["bundle"])
    found = bundle.probe(spec["probe"])
    if found is None:
        return {"gops": None}
    path, entry = found
    engine = load_model_file(path, spec["backend"], spec["threads"], spec.get("delegate"))
    x = np.random.default_rng(0).random(engine.input_shape, dtype=np.float32).astype(engine.input_dtype)
    for _ in range(3):
        engine.infer(x)
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        engine.infer(x)
        best = min(best, time.perf_counter() - t)
    return {"gops": entry.gflop / best}


def measure_invoke(spec: dict) -> dict:
    bundle = Bundle.open(spec["bundle"])
    t0 = time.perf_counter()
    engine = open_engine(bundle, spec["backend"], spec["variant"], spec["threads"], spec.get("delegate"))
    load_s = time.perf_counter() - t0
    size = bundle.manifest.input
    image = render_sample(1, 4, max(size.height, size.width), np.random.default_rng(0))[
        None, : size.height, : size.width
    ]
    t0 = time.perf_counter()
    engine.infer(image)
    first_s = time.perf_counter() - t0
    for _ in range(spec["warmup"]):
        engine.infer(image)
    samples = []
    period = 1 / spec["fps"] if spec.get("fps") else 0.0  # paced like a camera: the pool sleeps between frames
    start = time.perf_counter()
    for i in range(spec["runs"]):
        if period:
            time.sleep(max(0.0, start + i * period - time.perf_counter()))
        t = time.perf_counter()
        engine.infer(image)
        samples.append((time.perf_counter() - t) * 1e3)
    elapsed = time.perf_counter() - start
    return {
        "latency_ms": summary(samples),
        "throughput_fps": spec["runs"] / elapsed,
        "load_s": load_s,
        "first_inference_s": first_s,
        "engine": engine.info(),
    }


def _classifier(spec: dict) -> tuple[Classifier, float]:
    t0 = time.perf_counter()
    classifier = Classifier(spec["bundle"], spec["backend"], spec["variant"], spec["threads"], spec.get("delegate"))
    return classifier, time.perf_counter() - t0


INTERLEAVE = 10  # frames per block when pipeline and bare invoke alternate


def measure_pipeline(spec: dict) -> dict:
    """Source -> preprocess -> infer -> decision at full rate, with a per-stage breakdown.

    Blocks of pipeline frames alternate with blocks of bare invokes in this same process, so
    that the pipeline/invoke ratio is measured side by side, immune to the machine's drift.
    """
    classifier, load_s = _classifier(spec)
    decider = Decider(classifier.labels)
    capture = Capture(lambda: open_source("synthetic://?items=0&present=20&empty=0")).start()
    stages: dict[str, list[float]] = {"capture_wait": [], "preprocess": [], "infer": [], "postprocess": []}
    totals: list[float] = []
    pipeline_s = invoke_s = 0.0
    invokes = 0
    t0 = time.perf_counter()
    first = capture.next_frame(-1, timeout=5)
    classifier.classify(first.image)
    first_s = time.perf_counter() - t0
    last = first.frame_id
    fixed = classifier.prepare(first.image)[None]
    for i in range(spec["warmup"] + spec["runs"]):
        measured = i >= spec["warmup"]
        if measured and (i - spec["warmup"]) % INTERLEAVE == 0:
            t = time.perf_counter()
            for _ in range(INTERLEAVE):
                classifier.engine.infer(fixed)
            invoke_s += time.perf_counter() - t
            invokes += INTERLEAVE
        t = time.perf_counter()
        frame = capture.next_frame(last, timeout=5)
        waited = time.perf_counter() - t
        last = frame.frame_id
        prediction = classifier.classify(frame.image)
        t2 = time.perf_counter()
        decider.update(True, time.monotonic(), (prediction.label.index, prediction.confidence), frame.frame_id)
        decide_ms = (time.perf_counter() - t2) * 1e3
        if measured:
            total = time.perf_counter() - t
            pipeline_s += total
            stages["capture_wait"].append(waited * 1e3)
            for key in ("preprocess", "infer"):
                stages[key].append(prediction.latency_ms[key])
            stages["postprocess"].append(prediction.latency_ms["postprocess"] + decide_ms)
            totals.append(total * 1e3)
    capture.stop()
    pipeline_fps, invoke_fps = spec["runs"] / pipeline_s, invokes / invoke_s
    return {
        "latency_ms": summary(totals),
        "throughput_fps": pipeline_fps,
        "load_s": load_s,
        "first_inference_s": first_s,
        "stages_ms": {k: summary(v)["p50"] for k, v in stages.items()},
        "interleaved": {"invoke_fps": invoke_fps, "pipeline_fps": pipeline_fps, "ratio": pipeline_fps / invoke_fps},
        "engine": classifier.engine.info(),
    }


def measure_shadow(spec: dict) -> dict:
    """What a canary pays for a model in the shadow of its own (the same variant of the bundle): blocks of
    frames classified by the serving model alone alternate with blocks where the shadow classifies them too, in
    this one process, so the added time per frame and per item is measured side by side; the memory the
    shadow's engine adds is the resident size before and after it loads."""
    from edge.models.shadow import Shadow
    from edge.vision.decision import VoteSettings

    classifier, load_s = _classifier(spec)
    capture = Capture(lambda: open_source("synthetic://?items=0&present=20&empty=0")).start()
    last = capture.next_frame(-1, timeout=5)
    classifier.classify(last.image)
    rss_before = rss_mb()
    second, shadow_load_s = _classifier(spec)
    shadow = Shadow(second, Path(spec["bundle"]), None, max_cost=1e9, max_s=1e9)
    second.classify(last.image)
    rss_added = rss_mb() - rss_before
    alone, beside = [], []
    for i in range(spec["warmup"] + spec["runs"]):
        frame = capture.next_frame(last.frame_id, timeout=5)
        last = frame
        with_shadow = (i // INTERLEAVE) % 2 == 1
        t = time.perf_counter()
        prediction = classifier.classify(frame.image)
        if with_shadow:
            shadow.observe(frame.frame_id, frame.image, sum(prediction.latency_ms.values()))
        ms = (time.perf_counter() - t) * 1e3
        if i >= spec["warmup"]:
            (beside if with_shadow else alone).append(ms)
    capture.stop()
    with_shadow, without = summary(beside), summary(alone)
    added = with_shadow["p50"] - without["p50"]
    per_item = VoteSettings().vote_frames
    return {
        "latency_ms": with_shadow,
        "throughput_fps": 1e3 / with_shadow["p50"],
        "load_s": load_s,
        "first_inference_s": shadow_load_s,
        "shadow": {
            "alone_p50_ms": without["p50"],
            "with_shadow_p50_ms": with_shadow["p50"],
            "added_ms_per_frame": added,
            "added_ms_per_item": added * per_item,
            "frames_per_item": per_item,
            "rss_added_mb": rss_added,
        },
        "engine": classifier.engine.info(),
    }


def private_state(work: Path) -> dict:
    """Config sections that keep a bench daemon off the device's own state (/var/lib/smartbin): it measures
    the bundle it was given, not the store's current model, and never rolls back, counts or keeps samples."""
    return {
        "outbox": {"path": ":memory:"},
        "updates": {"store": str(work / "models")},
        "samples": {"enabled": False},
        "counters": {"path": ":memory:"},
    }


def e2e_config(spec: dict, work: Path):
    """The bench daemon's config: the given bundle on an endless synthetic item, presence off."""
    from edge.config import parse_config

    host, port = spec["broker"].rsplit(":", 1)
    uri = f"synthetic://?items=0&present=20&empty=0&fps={spec.get('fps', 0)}"
    model = {k: spec.get(k) for k in ("bundle", "backend", "variant", "threads", "delegate")}
    return parse_config(
        {
            "device_id": "bench",
            "model": model,
            "source": {"uri": uri, "frozen_after_s": 0},
            "presence": {"mode": "always"},
            "decision": {"vote_frames": 5, "min_votes": 1},
            "mqtt": {"host": host, "port": int(port), "metrics_interval_s": 3600},
            **private_state(work),
        },
        "bench",
    )


def measure_e2e(spec: dict) -> dict:
    """The daemon's own loop (presence off) publishing to a broker; a subscriber timestamps arrival."""
    from edge.daemon.daemon import Daemon

    work = Path(tempfile.mkdtemp(prefix="smartbin-bench-"))
    atexit.register(shutil.rmtree, work, True)  # one measurement per process
    config = e2e_config(spec, work)
    t0 = time.perf_counter()
    daemon = Daemon(config)
    load_s = time.perf_counter() - t0
    captured: dict[int, float] = {}
    wanted = spec["warmup"] + spec["runs"]
    arrivals = Arrivals(config.mqtt, under(config.topic_base, Topic.CLASSIFICATION), wanted)
    daemon.start()
    if not (arrivals.ready and daemon.outputs.publisher.connected.wait(10)):
        raise RuntimeError(f"cannot reach the broker at {spec['broker']}")
    start = time.perf_counter()
    first_s = None
    while len(captured) < wanted:
        step = daemon.step(timeout=5)  # the daemon's own loop body: commands, frame, pipeline, watchdog, metrics
        if step.frame is None:
            raise RuntimeError("the source gave no frame")
        captured[step.frame.frame_id] = step.frame.mono
        if step.decision is not None:
            daemon.pipeline.forget_item()  # an endless stream of items: every frame is classified and published
        if first_s is None:
            first_s = time.perf_counter() - start
            start = time.perf_counter()
    elapsed = time.perf_counter() - start
    heard = arrivals.heard(5)
    ids = sorted(captured)[spec["warmup"] :]
    arrived = [i for i in ids if i in heard.at]
    latencies = [(heard.at[i] - captured[i]) * 1e3 for i in arrived]
    # Where the time goes, per frame (p50): the loop's own stages as the daemon timed them, then
    # publish -> arrival (broker hop and the subscriber's thread). "outside_inference" is each frame's
    # latency minus its own inference: the daemon's overhead, free of the drift of inference speed.
    breakdown = {f"loop_{k}": v["p50"] for k, v in daemon.pipeline.timings.percentiles().items()}
    breakdown.update(
        capture_to_publish=summary([heard.to_publish[i] for i in arrived])["p50"],
        publish_to_arrival=summary([(heard.at[i] - captured[i]) * 1e3 - heard.to_publish[i] for i in arrived])["p50"],
        outside_inference=summary([(heard.at[i] - captured[i]) * 1e3 - heard.infer_ms[i] for i in arrived])["p50"],
    )
    engine = daemon.classifier.engine.info()
    daemon.shutdown()
    return {
        "latency_ms": summary(latencies),
        "throughput_fps": (wanted - 1) / elapsed,
        "load_s": load_s,
        "first_inference_s": first_s,
        "messages_received": len(latencies),
        "messages_sent": len(ids),
        "stages_ms": breakdown,
        "engine": engine,
    }


MODES = {
    "invoke": measure_invoke,
    "pipeline": measure_pipeline,
    "e2e": measure_e2e,
    "shadow": measure_shadow,
    "probe": measure_probe,
}


def main() -> int:
    spec = json.loads(sys.argv[1])
    if spec.get("backend") == "onnxruntime":
        onnx_engine.LOG_PLACEMENT = True  # bench.py reads the providers' node counts from stderr
    result = MODES[spec["mode"]](spec)
    result["rss_peak_mb"] = peak_rss_mb()
    result["rss_steady_mb"] = rss_mb()
    sys.stdout.write(json.dumps(result) + "\n")  # the protocol with edge/bench.py, not a log line
    return 0


if __name__ == "__main__":
    sys.exit(main())
