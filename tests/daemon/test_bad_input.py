"""Bad input never crashes anything: images for predict and dataset check, random payloads for commands."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.cli import main
from edge.errors import ImageError
from edge.formats.images import read_image
from edge.wire.command_spec import ACTIONS, MAX_PAYLOAD, CommandError, parse_command
from tests.scenarios.fuzz import COMMAND_TOPIC, fuzz, start_daemon
from tests.support import ROOT
from tests.support.mqtt_client import Subscriber


def huge_png(path: Path) -> Path:
    """A valid PNG header that declares 100000 x 100000 pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(data + b"\x00" * 64)
    return path


@pytest.fixture()
def images(tmp_path: Path) -> dict[str, Path]:
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    paths = {
        name: tmp_path / name
        for name in ("zero.jpg", "truncated.jpg", "huge.png", "grey.png", "rgba.png", "png_named.jpg", "text.jpg")
    }
    paths["zero.jpg"].write_bytes(b"")
    ok, jpeg = cv2.imencode(".jpg", rgb)
    paths["truncated.jpg"].write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    huge_png(paths["huge.png"])
    cv2.imwrite(str(paths["grey.png"]), rgb[..., 0])
    cv2.imwrite(str(paths["rgba.png"]), np.dstack([rgb, np.full((40, 50), 128, np.uint8)]))
    cv2.imwrite(str(paths["png_named.jpg"]) + ".png", rgb)
    Path(str(paths["png_named.jpg"]) + ".png").rename(paths["png_named.jpg"])
    paths["text.jpg"].write_text("not an image")
    return paths


def test_image_reader(images):
    for name, message in (
        ("zero.jpg", "empty file (0 bytes)"),
        ("truncated.jpg", "truncated JPEG"),
        ("huge.png", "image too large (100000x100000"),
        ("text.jpg", "not a readable image"),
    ):
        with pytest.raises(ImageError, match=re.escape(message)) as info:
            read_image(images[name])
        assert str(images[name]) in str(info.value)
    for name in ("grey.png", "rgba.png", "png_named.jpg"):  # unusual but fine: converted to RGB
        assert read_image(images[name]).shape == (40, 50, 3)


@pytest.mark.slow
def test_predict_gives_one_line_per_bad_image_and_still_classifies_the_rest(bundle_dir, images, capsys):
    order = ["zero.jpg", "grey.png", "truncated.jpg", "rgba.png", "huge.png", "png_named.jpg", "text.jpg"]
    code = main(["predict", str(bundle_dir), *[str(images[n]) for n in order]])
    out, err = capsys.readouterr()
    assert code == 1
    assert len(out.splitlines()) == 3 and len(err.splitlines()) == 4
    assert all(line.startswith("smartbin: error: ") for line in err.splitlines())
    assert "Traceback" not in err


def test_dataset_check_reports_bad_images(tmp_path: Path, images, capsys):
    from convert.data.synth import write_synthetic

    data = write_synthetic(tmp_path / "data", 2, 4, size=32)
    for i, name in enumerate(("zero.jpg", "truncated.jpg", "huge.png", "text.jpg")):
        (data / f"img_{i}.jpg").write_bytes(images[name].read_bytes())
    assert main(["dataset", "check", str(data)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem:")]
    assert len(problems) == 4


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats()),
            "action": st.one_of(st.sampled_from(ACTIONS), st.text(max_size=10), st.integers()),
        },
        optional={
            "value": st.one_of(st.floats(), st.text(max_size=4), st.booleans()),
            "bundle": st.one_of(st.integers(), st.text(max_size=10)),
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.integers(MAX_PAYLOAD + 1, MAX_PAYLOAD * 4).map(lambda n: b"{" + b" " * n + b"}"),
)


@settings(max_examples=500, deadline=None)
@given(payloads)
def test_parse_command_never_raises_anything_but_command_error(payload):
    try:
        command = parse_command(payload)
    except CommandError as exc:
        assert str(exc)
    else:
        assert command.action in ACTIONS


COMMAND_SCHEMA = json.loads((ROOT / "edge" / "schemas" / "command.json").read_text(encoding="utf-8"))
text_fields = st.one_of(st.text(max_size=110), st.sampled_from(["", "  ", " can ", "x" * 100, " " + "x" * 100 + " "]))
commands = st.fixed_dictionaries(
    {"action": st.one_of(st.sampled_from(ACTIONS), st.text(max_size=6))},
    optional={
        "id": st.one_of(
            st.integers(),
            st.text(max_size=5),
            st.none(),
            st.booleans(),
            st.floats().filter(lambda f: not f.is_integer()),
        ),
        "value": st.one_of(st.floats(-1, 2), st.integers(-1, 2), st.text(max_size=3), st.booleans(), st.none()),
        "bundle": st.one_of(st.integers(), st.text(max_size=10), st.none()),
        "url": st.one_of(
            st.sampled_from(["http://h/b.tar", "https://h:1/x", "ftp://h/b.tar", "http://", "http://a b"]),
            st.text(max_size=12),
        ),
        "sha256": st.one_of(st.none(), st.sampled_from(["0" * 64, "A" * 64, "0" * 63]), st.integers()),
        "force": st.one_of(st.booleans(), st.integers(0, 1), st.none()),
        "event_id": st.one_of(text_fields, st.integers()),
        "label": st.one_of(text_fields, st.none()),
        "other": st.integers(),
    },
)


@settings(max_examples=1500, deadline=None)
@given(commands)
@example({"action": "correct", "event_id": " e ", "label": " " + "x" * 100 + " "})
@example({"action": "update_model", "url": "http://h/b.tar", "sha256": None})
def test_the_command_schema_accepts_exactly_what_the_daemon_accepts(command):
    """edge/schemas/command.json is what clients are told; parse_command is what the bin does."""
    try:
        parse_command(json.dumps(command).encode())
        accepted = True
    except CommandError:
        accepted = False
    assert jsonschema.Draft202012Validator(COMMAND_SCHEMA).is_valid(command) == accepted


@pytest.fixture(scope="module")
def running_daemon(tmp_path_factory, bundle_dir):
    from edge.tools.localbroker import LocalBroker

    tmp = tmp_path_factory.mktemp("fuzz")
    broker = LocalBroker(workdir=tmp / "broker").start()
    process = start_daemon(tmp, bundle_dir, broker.port)
    sub = Subscriber(broker.port)
    assert sub.wait_for("classification", timeout=60), "daemon did not start"
    yield process, sub
    process.send_signal(signal.SIGTERM)
    process.wait(15)
    sub.close()
    broker.stop()


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(payloads, min_size=15, max_size=15))
@example([json.dumps({"id": 1, "action": "reload_model"}).encode()] * 2 + [b"{}"] * 13)  # answered when loaded
def test_daemon_answers_every_random_command_and_keeps_classifying(running_daemon, batch):
    process, sub = running_daemon
    results_before = len(sub.on("command/result"))
    # a drawn "pause" is legitimate; the resume after the batch undoes it before classification is checked
    # (an id of its own each time: an id that changed something once is not carried out again)
    undo_id = f"undo-{uuid.uuid4().hex}"
    for payload in [*batch, json.dumps({"id": undo_id, "action": "resume"}).encode()]:
        sub.publish(COMMAND_TOPIC, payload)
    results = sub.wait_for("command/result", count=results_before + len(batch) + 1)
    assert len(results) == results_before + len(batch) + 1, "a command went unanswered"
    # by id, not position: a drawn reload_model is answered when its model has loaded, maybe after "undo"
    undo = [m.json() for m in results[results_before:] if m.json().get("id") == undo_id]
    assert undo and undo[-1]["ok"]
    classified = len(sub.on("classification"))
    assert sub.wait_for("classification", count=classified + 3), "classification stopped"
    assert process.poll() is None, "the daemon died"


@pytest.mark.slow
def test_daemon_survives_hundreds_of_hostile_payloads(running_daemon):
    """The bounded CI share of `make fuzz` (which sends 10,000): every kind of payload, every one answered."""
    process, sub = running_daemon
    report = fuzz(sub, process, payloads=600, seed=1)
    assert report.failures == [] and report.crashes == 0, report.summary()
    assert report.sent > 350 and report.other_topics > 30 and report.refused > 200
    assert report.classifications[-1] > report.classifications[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "target, variables, expected",
    [
        (
            "fuzz",
            ["FUZZ_PAYLOADS=100"],
            r"fuzz: sent 100 payloads .* crashes 0, .* failures 0[\s\S]*"
            r"fuzz http: sent review station 100, status page 100, samples fetch 100; failures 0",
        ),
        ("soak", ["SOAK_MINUTES=0.1", "SOAK_EVERY=2"], r"growth first third -> last third: RSS"),
        # the archive server alone (the page and the review station stand on the same BoundedServer)
        ("http-load", ["HTTP_FLOOD=40", "HTTP_SERVERS=archive"], r"\narchive +\d+\.\d+ +\d+ +\d+\.\d+ +\d+\.\d+"),
    ],
)
def test_make_fuzz_soak_and_http_load_run_as_a_user_types_them(bundle_dir, target, variables, expected):
    """The Makefile's own targets, with the bundle path relative to where make runs (as in the Makefile)."""
    bundle = os.path.relpath(bundle_dir, ROOT)
    command = ["make", "--no-print-directory", target, f"SMALL_BUNDLE={bundle}", f"BIN={Path(sys.executable).parent}"]
    # -o: the bundle is given, not built (make would retrain it when it looks older than the venv)
    command += ["-o", f"{bundle}/manifest.json", "-o", ".venv/.installed", *variables]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(expected, done.stdout), done.stdout[-3000:]
