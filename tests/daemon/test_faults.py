"""Faults survived and counted: broker outage, SIGKILL, camera gone, disk trouble (real processes, real broker)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, empty_bin_source, poll, write_config
from tests.support.mqtt_client import Subscriber, unique_decisions

pytestmark = pytest.mark.slow


def daemon(config: Path, env: dict | None = None) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config)],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def outbox_rows(path: Path) -> list[str]:
    """The event_ids waiting in a daemon's outbox, oldest first (read-only, beside the running daemon)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT event_id FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def decisions_counted(path: Path) -> int:
    """Every decision the daemon made, as its counters file (which outlives restarts) has them."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COALESCE(SUM(n), 0) FROM counts WHERE kind = 'reason'").fetchone()[0])
    finally:
        db.close()


def streaming(tmp_path: Path, bundle_dir: Path, broker, clip_factory) -> tuple[Subscriber, subprocess.Popen]:
    """A daemon on a looping clip of dropped items, watched by a subscriber whose session (and QoS 1
    queue) survives a broker restart."""
    clip, _ = clip_factory(items=4)
    config = write_config(tmp_path / "c.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", broker.port)
    sub = Subscriber(broker.port, client_id="fault-watcher", persistent=True)
    sub.client.reconnect_delay_set(0.2, 1)
    return sub, daemon(config)


def test_broker_outage_loses_nothing(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    """Decisions made while the broker is down wait in the outbox (read from its file) and all arrive,
    in order, once it is back; the counters say how many were made in all."""
    sub, process = streaming(tmp_path, bundle_dir, broker, clip_factory)
    outbox = tmp_path / "outbox.sqlite"
    try:
        assert sub.wait_decisions(2, timeout=60), "no decisions before the outage"
        broker.stop()
        outage_started = time.monotonic()
        waiting = poll(lambda: rows if len(rows := outbox_rows(outbox)) >= 3 else None, 40)
        assert waiting, "no decisions queued while the broker was down"  # items kept being dropped
        outage_s = time.monotonic() - outage_started
        broker.start()
        assert poll(lambda: not set(waiting) - {m.json()["event_id"] for m in sub.on("decision")}, 60)
        received = [d["event_id"] for d in unique_decisions(sub.on("decision"))]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    made = decisions_counted(tmp_path / "counters.sqlite")
    final = [d["event_id"] for d in sub.wait_decisions(made, timeout=30)]
    duplicates = len(sub.on("decision")) - len(final)
    print(
        f"\nbroker outage {outage_s:.1f} s: decisions made {made} (queued during the outage {len(waiting)}), "
        f"received {len(final)}, lost {made - len(final)}, duplicates removed {duplicates}"
    )
    assert [i for i in received if i in waiting] == waiting, "the backlog arrived out of order"
    assert len(final) >= made and not outbox_rows(outbox), "a decision was lost"
    statuses = [m.json()["state"] for m in sub.on("status")]
    assert statuses.count("online") >= 2  # online again after the broker came back
    sub.close()


def test_sigkill_mid_stream_then_restart(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    """SIGKILL: what the outbox held is sent by the next start; every counted decision arrives."""
    sub, process = streaming(tmp_path, bundle_dir, broker, clip_factory)
    assert sub.wait_decisions(3, timeout=60)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    will = sub.wait_for("status", where=lambda m: m.json()["state"] == "offline", timeout=90)
    assert will, "the Last Will did not announce offline"
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    left = outbox_rows(tmp_path / "outbox.sqlite")
    made = decisions_counted(tmp_path / "counters.sqlite")
    config = write_config(tmp_path / "c.yaml", bundle_dir, empty_bin_source(tmp_path / "empty"), broker.port)
    restarted = daemon(config)
    restarted.communicate(timeout=60)
    received = {d["event_id"] for d in sub.wait_decisions(made)}
    sub.close()
    print(
        f"\nSIGKILL after {made} decisions ({len(left)} unacknowledged in the outbox): received {len(received)}, "
        f"lost {made - len(received) if made > len(received) else 0}, restarts survived 1"
    )
    assert set(left) <= received and len(received) >= made
    assert restarted.returncode == 0


def notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def drain(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """(monotonic arrival time, message) for every sd_notify datagram within ``seconds``."""
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
        except TimeoutError:
            pass
    return messages


def pings(messages: list[tuple[float, str]], after: float = 0.0) -> int:
    return sum(1 for t, m in messages if m == "WATCHDOG=1" and t > after)


def test_camera_gone_is_reported_while_the_loop_stays_watched_and_recovers(
    tmp_path: Path, bundle_dir: Path, broker, clip_factory
):
    """The camera goes away for a while: camera_lost on the retained status within seconds, the watchdog
    still fed (the loop is alive: no restart loop), frames and ok again when it is back."""
    clip, _ = clip_factory(items=4)
    live = tmp_path / "camera.avi"
    live.write_bytes(clip.read_bytes())
    config = write_config(
        tmp_path / "c.yaml",
        bundle_dir,
        f"file://{live}?loop=1&realtime=1",
        broker.port,
        source__stall_timeout_s=1.5,
        source__reconnect_max_s=0.5,
    )
    sock, path = notify_socket(tmp_path)
    sub = Subscriber(broker.port)
    process = daemon(config, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        healthy = drain(sock, 3)
        assert any(m.startswith("READY=1") for _, m in healthy) and pings(healthy) >= 5
        live.unlink()  # the camera goes away
        gone_at = time.time()
        lost = sub.wait_for("status", timeout=60, where=lambda m: m.json()["health"] == "camera_lost")
        metrics = sub.wait_for("metrics", where=lambda m: m.json()["source_state"] == "reconnecting")
        gone = drain(sock, 3)  # while camera_lost: the loop still turns (twice a second without frames)
        still_lost = sub.on("status")[-1].json()["health"] == "camera_lost"
        live.write_bytes(clip.read_bytes())  # ...and comes back
        returned_at = time.time()
        back = drain(sock, 4)
        recovered = sub.wait_for(
            "status",
            where=lambda m: (
                m.json()["health"] == "ok" and m.json()["state"] == "online" and m.json()["source"]["state"] == "ok"
            ),
        )
        frames_back = sub.wait_for("classification", where=lambda m: m.json()["ts"] > returned_at)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        sub.close()
    print(
        f"\ncamera gone: pings while healthy {pings(healthy)}, during the outage {pings(gone)}, "
        f"after its return {pings(back)}; camera_lost on the status {lost[0].json()['ts'] - gone_at:.1f} s after"
    )
    assert lost and "clip is gone" in json.dumps(lost[0].json()["source"]), lost[0].json()
    assert metrics and still_lost and pings(gone) >= 3, "the watchdog starved while only the camera was gone"
    assert pings(back) >= 3 and recovered and frames_back
    assert process.returncode == 0


def test_a_camera_lost_for_restart_after_s_exits_for_a_restart(tmp_path: Path, bundle_dir: Path, broker):
    """source.restart_after_s: a camera that does not come back (a hung driver) ends in exit 75 through the
    restart back-off, which systemd restarts; SIGTERM ends the back-off's wait."""
    folder = tmp_path / "gone"
    config = write_config(
        tmp_path / "c.yaml", bundle_dir, f"file://{folder}/none.avi?loop=1", broker.port, source__restart_after_s=2
    )
    sock, path = notify_socket(tmp_path)
    process = daemon(config, {"NOTIFY_SOCKET": path})
    try:
        failed = []
        deadline = time.monotonic() + 60
        while not failed and time.monotonic() < deadline:
            failed = [m for _, m in drain(sock, 0.5) if "STATUS=failed" in m]
        assert failed and "source.restart_after_s" in failed[0], failed
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 75, err[-1500:]


def test_outbox_not_writable_is_reported_without_crash_loop(tmp_path: Path, bundle_dir: Path, broker, clip_factory):
    clip, _ = clip_factory(items=4)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    config = write_config(tmp_path / "c.yaml", bundle_dir, f"file://{clip}?realtime=1", broker.port)
    import yaml

    data = yaml.safe_load(config.read_text())
    data["outbox"]["path"] = str(blocker / "outbox.sqlite")
    config.write_text(yaml.safe_dump(data))
    sub = Subscriber(broker.port)
    process = daemon(config)
    _, err = process.communicate(timeout=60)
    sub.close()
    assert process.returncode == 0, err[-1500:]
    assert "cannot open outbox" in err and "Traceback" not in err
    metrics = [m.json() for m in sub.on("metrics")]
    assert metrics and all("cannot open outbox" in m["outbox_error"] for m in metrics)
    assert len(unique_decisions(sub.on("decision"))) == 4  # still sorting
    assert any(m.json()["health"] == "degraded" for m in sub.on("status"))


def test_an_accelerator_that_resets_mid_run_ends_in_the_back_off_not_a_crash(
    tmp_path: Path, bundle_copy: Path, broker, clip_factory
):
    """An error nobody foresaw in the loop (a TensorRT device that resets, faked at ONNX Runtime's provider:
    every run after the fifth raises RuntimeError) goes through the same restart back-off as a lost model:
    counted, STATUS says why and when it restarts, exit 75 (systemd restarts it) instead of exit 1 five
    times in a row, after which systemd's start limit would leave the bin dead."""
    from edge.daemon.daemon import START_FAILURES
    from tests.support.fakes import fakes_path

    clip, _ = clip_factory(items=4)
    # a copy: the fake engine's cache is written beside the model (the shared bundle would carry it to others)
    config = write_config(tmp_path / "c.yaml", bundle_copy, f"file://{clip}?realtime=1", broker.port)
    fakes = fakes_path(tmp_path / "fakes")
    sock, path = notify_socket(tmp_path)
    env = {
        "NOTIFY_SOCKET": path,
        "PYTHONPATH": f"{fakes}:{ROOT}",
        "SMARTBIN_FAKE_TENSORRT_BUILD_S": "0",
        "SMARTBIN_FAKE_TENSORRT_RESETS_AFTER": "5",
    }
    sub = Subscriber(broker.port)
    process = daemon(config, env)
    try:
        failed: list[str] = []
        deadline = time.monotonic() + 90
        while not failed and time.monotonic() < deadline and process.poll() is None:
            failed = [m for _, m in drain(sock, 0.5) if "STATUS=failed" in m]
        assert failed and "RuntimeError" in failed[0] and "restarting in 30 s" in failed[0], failed
        assert process.poll() is None  # waiting out the back-off, SIGTERM cuts it short
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        sub.close()
    assert process.returncode == 75, err[-1500:]
    assert len(json.loads((tmp_path / "models" / START_FAILURES).read_text())) == 1
    assert [m.json()["backend"] for m in sub.on("status")][:1] == ["onnxruntime"]  # it ran on the "accelerator"


def test_a_failing_card_is_logged_once_per_change_not_every_loop_turn(
    tmp_path: Path, bundle_dir: Path, broker, clip_factory
):
    """The outbox file turns to garbage under the running daemon (a dying SD card): every loop turn's read
    fails, and the journal gets the error once (it used to get it ~30 times a second); the daemon goes on
    sorting and says so in its metrics."""
    clip, _ = clip_factory(items=4)
    config = write_config(tmp_path / "c.yaml", bundle_dir, f"file://{clip}?loop=1&realtime=1", broker.port)
    sub = Subscriber(broker.port)
    process = daemon(config)
    try:
        assert sub.wait_for("decision", timeout=60), "no decision"

        def card_goes_bad() -> None:  # the same files (database, WAL, index), their bytes gone bad
            for part in tmp_path.glob("outbox.sqlite*"):
                with part.open("r+b") as card:
                    card.write(b"\x5a" * part.stat().st_size)

        # A dying card keeps failing: the garbage is written again until the daemon has read it. Once, in a
        # loaded full run, one write of it left no error for 30 s; a write of the daemon's own between two of
        # these files may leave SQLite a valid database (not shown: the likeliest reading).
        failing = []
        for _ in range(15):
            card_goes_bad()
            failing = sub.wait_for("metrics", where=lambda m: m.json()["outbox_error"], timeout=2)
            if failing:
                break
        assert failing, "the outbox error never showed"
        since = time.time()
        assert sub.wait_for("decision", count=3, timeout=60, where=lambda m: m.json()["ts"] > since)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        sub.close()
    assert process.returncode == 0, err[-1500:]
    lines = [line for line in err.splitlines() if "ERROR" in line]
    assert 1 <= len(lines) <= 6, lines[:10]
