"""Frame sources: file, dir and synthetic for real; V4L2 and CSI up to a fake at the OpenCV/picamera2 boundary."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.formats.images import write_jpeg
from edge.sources import Capture, open_source
from edge.sources.synthetic import SyntheticSource, write_clip
from tests.support import drain
from tests.support.fakes import install_broken_picamera2, install_fake_camera, install_fake_picamera2


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "items.avi"
    source = SyntheticSource("synthetic://", classes=4, items=2, empty=3, present=4, width=160, height=120)
    assert write_clip(str(path), source, fps=10) == 2 * 7 + 3
    return path


def test_a_live_synthetic_camera_gives_the_pictures_of_its_script():
    """A free-running synthetic camera draws each frame before it is due (as a camera's frame is in memory at
    its time): the pictures are those its script makes on demand, skipped frames included."""
    script = {"classes": 4, "items": 3, "empty": 2, "present": 3, "width": 64, "height": 48, "seed": 5}
    reference, live = SyntheticSource("synthetic://", **script), SyntheticSource("synthetic://", fps=200, **script)
    pictures = []
    with reference:
        while reference.grab():
            pictures.append(reference.retrieve())
    with live:
        index = 0
        while live.grab():
            if index % 3 != 1:  # a reader that takes some frames only
                assert np.array_equal(live.retrieve(), pictures[index]), index
            index += 1
    assert index == len(pictures) == 3 * 5 + 2


def test_file_replay_delivers_every_frame_in_order(clip: Path):
    capture = Capture(lambda: open_source(f"file://{clip}")).start()
    frames = drain(capture)
    capture.stop()
    assert [f.frame_id for f in frames] == list(range(1, 18))
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    assert capture.ended and capture.health.reconnects == 0
    assert all(b.mono >= a.mono for a, b in zip(frames, frames[1:]))


def test_file_loop_keeps_going(clip: Path):
    capture = Capture(lambda: open_source(f"file://{clip}?loop=1")).start()
    frames = drain(capture, limit=40)
    capture.stop()
    assert len(frames) == 40 and not capture.ended


def test_realtime_file_skips_frames_for_a_slow_consumer(clip: Path):
    capture = Capture(lambda: open_source(f"file://{clip}?realtime=1")).start()
    seen, last = [], -1
    while (frame := capture.next_frame(last, timeout=5)) is not None:
        seen.append(frame)
        last = frame.frame_id
        time.sleep(0.25)  # a slow model: 2.5 frame periods per frame
    capture.stop()
    assert capture.health.grabbed == 17
    assert len(seen) < 17  # the stale backlog was skipped, never decoded
    assert capture.health.frames == len(seen)


def test_dir_source_is_sorted(tmp_path: Path):
    for i in (2, 0, 1):
        write_jpeg(tmp_path / f"frame_{i}.jpg", np.full((20, 30, 3), i * 100, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    capture = Capture(lambda: open_source(f"dir://{tmp_path}")).start()
    frames = drain(capture)
    capture.stop()
    assert [int(f.image.mean().round(-2)) for f in frames] == [0, 100, 200]


def test_synthetic_script_has_items_and_empty_frames():
    source = open_source("synthetic://?items=3&empty=2&present=3&classes=4&seed=5&width=96&height=64")
    capture = Capture(lambda: source).start()
    frames = drain(capture)
    capture.stop()
    assert len(frames) == 3 * 5 + 2
    assert [source.item_at(i) is not None for i in range(5)] == [False, False, True, True, True]
    empty, full = frames[0].image.astype(int), frames[3].image.astype(int)
    assert np.abs(frames[1].image.astype(int) - empty).mean() < 5  # noise only
    assert np.abs(full - empty).mean() > 5  # an item


def test_missing_clip_reconnects_with_backoff_and_recovers(clip: Path, tmp_path: Path):
    target = tmp_path / "late.avi"
    capture = Capture(lambda: open_source(f"file://{target}"), backoff_s=(0.05, 0.2)).start()
    time.sleep(0.5)
    assert capture.health.state == "reconnecting" and "no such file" in capture.health.error
    assert capture.health.reconnects >= 2
    target.write_bytes(clip.read_bytes())
    frame = capture.next_frame(timeout=5)
    capture.stop()
    assert frame is not None and capture.health.state in ("ok", "ended")


def test_v4l2_requests_mjpg_size_and_fps_and_reports_what_it_got(monkeypatch, caplog):
    camera = install_fake_camera(monkeypatch)
    source = open_source("v4l2:///dev/video2?width=320&height=240&fps=60")
    source.open()
    assert camera.opened == [("/dev/video2", 200)]  # cv2.CAP_V4L2
    assert source.describe()["width"] == 320 and source.describe()["fps"] == 30
    assert "asked for 320x240 at 60 fps, the camera gives 320x240 at 30 fps" in caplog.text
    assert source.grab()
    image = source.retrieve()
    assert image.shape == (240, 320, 3) and image[0, 0, 2] == 255  # BGR -> RGB
    source.close()
    assert open_source("/dev/video0").target == "/dev/video0" and open_source("1").target == 1


def test_unplugged_camera_reconnects_and_resumes(monkeypatch):
    camera = install_fake_camera(monkeypatch)
    capture = Capture(lambda: open_source("v4l2://0"), backoff_s=(0.05, 0.1)).start()
    first = capture.next_frame(timeout=2)
    assert first is not None and capture.health.state == "ok"
    camera.unplugged = True
    time.sleep(0.4)
    assert capture.health.state == "reconnecting" and capture.health.reconnects >= 1
    camera.unplugged = False
    later = capture.next_frame(first.frame_id, timeout=2)
    capture.stop()
    assert later is not None and later.frame_id > first.frame_id
    assert capture.health.state == "ok"


def test_frozen_camera_counts_as_failure(monkeypatch):
    camera = install_fake_camera(monkeypatch)
    monkeypatch.setattr(camera, "retrieve", lambda self: (True, np.zeros((48, 64, 3), np.uint8)))
    capture = Capture(lambda: open_source("v4l2://0"), frozen_after_s=0.2, backoff_s=(0.05, 0.1)).start()
    deadline = time.monotonic() + 3
    while capture.health.reconnects == 0 and time.monotonic() < deadline:
        capture.next_frame(timeout=0.1)
    capture.stop()
    assert capture.health.reconnects >= 1 and "frozen" in capture.health.error


def test_csi_on_a_pi_uses_picamera2(monkeypatch):
    fake = install_fake_picamera2(monkeypatch)
    source = open_source("csi://0?width=320&height=240")
    source.open()
    assert fake.instances[0].config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert source.grab()
    assert source.retrieve()[0, 0].tolist() == [0, 0, 200]  # B,G,R memory order -> RGB
    first = source.timestamp_ms()
    assert source.grab() and source.timestamp_ms() > first  # the sensor's clock: new frames of a still scene
    source.close()
    assert not fake.instances[0].started


def test_csi_errors_say_what_to_do(monkeypatch):
    from edge.sources import SourceError

    fake = install_fake_picamera2(monkeypatch)
    fake.fail_open = True
    with pytest.raises(SourceError, match="is it connected and enabled"):
        open_source("csi://0").open()


def test_jetson_csi_uses_a_gstreamer_pipeline(monkeypatch):
    import edge.sources.csi as csi

    camera = install_fake_camera(monkeypatch)
    monkeypatch.setattr(csi, "is_jetson", lambda: True)
    open_source("csi://1?width=1280&height=720&fps=30").open()
    target, api = camera.opened[0]
    assert "nvarguscamerasrc sensor-id=1" in target and "width=1280" in target and api == 1800  # CAP_GSTREAMER


def test_a_jetson_camera_on_an_opencv_without_gstreamer_says_which_wheel_to_remove(monkeypatch):
    """The pip wheel this suite runs has no GStreamer, as one that shadows JetPack's OpenCV in a Jetson's venv;
    JetPack's own build (its line as it prints it) has it, and then the hint is about nvargus-daemon."""
    import cv2

    import edge.sources.csi as csi

    monkeypatch.setattr(csi, "is_jetson", lambda: True)
    source = open_source("csi://0")
    assert not csi.has_gstreamer(cv2.getBuildInformation())
    assert "has no GStreamer" in source.hint() and "pip uninstall opencv-python-headless" in source.hint()
    jetpack = "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   YES (1.20.3)\n"
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: jetpack)
    assert csi.has_gstreamer(jetpack) and "nvargus-daemon" in source.hint()


@pytest.mark.parametrize(
    "uri, message",
    [
        ("ftp://cam", "unknown source"),
        ("synthetic://?colour=red", "unknown option 'colour'"),
        ("v4l2://0?width=wide", "width='wide' is not a int"),
    ],
)
def test_bad_uris_say_what_is_allowed(uri: str, message: str):
    with pytest.raises(ConfigError, match=message):
        open_source(uri)


def test_csi_says_what_to_run_when_an_os_module_was_built_for_another_numpy(monkeypatch):
    """On Raspberry Pi OS, `import picamera2` raises ValueError when apt's simplejpeg (numpy 1.24) meets
    the venv's numpy 2 (faked at the picamera2 boundary; tests/system/test_pi_venv.py shows the real mismatch)."""
    from edge.sources import SourceError

    install_broken_picamera2(monkeypatch, ValueError("numpy.dtype size changed, may indicate binary incompatibility"))
    with pytest.raises(SourceError, match="reinstalls simplejpeg in the venv"):
        open_source("csi://0").open()


def test_every_scheme_of_the_registry_names_a_file_that_makes_its_source():
    import importlib

    from edge.sources import REGISTRY, check_uri

    for scheme, entry in REGISTRY.items():
        assert callable(importlib.import_module(entry.module).make), scheme
    made = importlib.import_module(REGISTRY["synthetic"].module).make(check_uri("synthetic://?items=2&seed=3"))
    assert type(made).__name__ == "SyntheticSource" and made.uri == "synthetic://?items=2&seed=3"
