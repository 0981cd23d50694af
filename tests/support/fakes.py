"""The one place for fakes of hardware we do not have: a camera behind OpenCV's VideoCapture, picamera2, a
TensorRT provider, an ONNX Runtime that crashes, and a second host's wall clock. Everything above these
boundaries is the real code."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np


class FakeCamera:
    """Stands in for cv2.VideoCapture on a USB/CSI camera: numbered frames, can be unplugged."""

    unplugged = False
    opened: list[tuple] = []

    def __init__(self, target, api=cv2.CAP_ANY):
        FakeCamera.opened.append((target, api))
        self.props: dict[int, float] = {
            cv2.CAP_PROP_FRAME_WIDTH: 640,
            cv2.CAP_PROP_FRAME_HEIGHT: 480,
            cv2.CAP_PROP_FPS: 30,
        }
        self.count = 0
        self.retrieved = 0
        self._open = not FakeCamera.unplugged

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self._open

    def set(self, prop: int, value: float) -> bool:
        # Like many webcams: honours the size, caps the rate at 30 fps.
        self.props[prop] = min(value, 30) if prop == cv2.CAP_PROP_FPS else value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def grab(self) -> bool:
        if FakeCamera.unplugged:
            return False
        self.count += 1
        return True

    def retrieve(self):
        self.retrieved += 1
        h, w = int(self.props[cv2.CAP_PROP_FRAME_HEIGHT]), int(self.props[cv2.CAP_PROP_FRAME_WIDTH])
        frame = np.full((h, w, 3), self.count % 256, np.uint8)  # BGR, value = frame count
        frame[..., 0] = 255  # blue channel marks BGR order
        return True, frame

    def release(self) -> None:
        self._open = False


class FakeRequest:
    """picamera2's CompletedRequest: the frame's array and its metadata, released after use."""

    def __init__(self, array: np.ndarray, sensor_ns: int):
        self.array, self.metadata, self.released = array, {"SensorTimestamp": sensor_ns}, False

    def make_array(self, stream: str) -> np.ndarray:
        return self.array

    def get_metadata(self) -> dict:
        return self.metadata

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    """picamera2.Picamera2 as far as edge/sources/csi.py uses it."""

    instances: list[FakePicamera2] = []
    fail_open = False

    def __init__(self, index: int = 0):
        if FakePicamera2.fail_open:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.index = index
        self.config: dict | None = None
        self.started = False
        self.frames = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, controls: dict, buffer_count: int) -> dict:
        return {"main": main, "controls": controls, "buffer_count": buffer_count}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_request(self) -> FakeRequest:
        return FakeRequest(self.capture_array(), self.frames * 33_333_333)

    def capture_array(self, stream: str = "main") -> np.ndarray:
        w, h = self.config["main"]["size"]
        self.frames += 1
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 0] = 200  # memory order B,G,R: blue first
        return frame

    def close(self) -> None:
        self.started = False


def install_fake_picamera2(monkeypatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    FakePicamera2.fail_open = False
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def install_broken_picamera2(monkeypatch, error: Exception) -> None:
    """``import picamera2`` raises ``error``, as it does where an OS module it needs cannot load."""

    class Broken:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "picamera2":
                raise error
            return None

    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])


def install_fake_camera(monkeypatch) -> type[FakeCamera]:
    import edge.sources.opencv

    FakeCamera.unplugged = False
    FakeCamera.opened = []
    monkeypatch.setattr(edge.sources.opencv, "VideoCapture", FakeCamera)
    return FakeCamera


TENSORRT = "TensorrtExecutionProvider"
FAKE_ENGINE = "model.engine"


def install_slow_tensorrt(build_s: float, monkeypatch=None, resets_after: int | None = None) -> None:
    """ONNX Runtime as on a Jetson, as far as starting goes: a TensorRT provider whose first session
    "builds an engine" for ``build_s`` seconds and writes it into ``trt_engine_cache_path``; a session
    that finds the engine there starts at once. Inference itself runs on the real CPU provider.
    ``resets_after``: the device resets after that many runs of the process's TensorRT sessions, and
    every later run raises ONNX Runtime's RuntimeError, as CUDA's errors do until the process ends.

    Installed into a process by ``sitecustomize`` when SMARTBIN_FAKE_TENSORRT_BUILD_S is set (the
    real-systemd test's drop-in): the unit, the daemon and the engine cache are the real ones. In a
    test process, pass ``monkeypatch`` so that it is undone."""
    import time
    from pathlib import Path

    import onnxruntime as ort

    real_session, real_providers = ort.InferenceSession, ort.get_available_providers
    runs = [0]

    class SlowTensorrtSession(real_session):
        def __init__(self, path, options=None, providers=None, **kwargs):
            trt = [p for p in providers or [] if isinstance(p, tuple) and p[0] == TENSORRT]
            self._trt = bool(trt)
            if trt:
                cache = Path(trt[0][1]["trt_engine_cache_path"])
                if not (cache / FAKE_ENGINE).is_file():
                    time.sleep(build_s)
                    (cache / FAKE_ENGINE).write_bytes(Path(path).read_bytes()[:1024])
            others = [p for p in providers or [] if not (isinstance(p, tuple) and p[0] == TENSORRT)]
            super().__init__(path, options, providers=others, **kwargs)

        def get_providers(self):
            return [TENSORRT, *super().get_providers()] if self._trt else super().get_providers()

        def run(self, *args, **kwargs):
            if self._trt and resets_after is not None:
                runs[0] += 1
                if runs[0] > resets_after:
                    raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 999: unknown error (device reset)")
            return super().run(*args, **kwargs)

    put = monkeypatch.setattr if monkeypatch is not None else setattr
    put(ort, "InferenceSession", SlowTensorrtSession)
    put(ort, "get_available_providers", lambda: [TENSORRT, *real_providers()])


def shift_wall_clock(offset_s: float) -> None:
    """This process's wall clock ``offset_s`` off, as on a second host without NTP (time.time and time_ns; the
    monotonic clock, which sleeps and timeouts use, untouched: libfaketime's whole-clock shift broke those)."""
    import time

    real_time, real_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset_s
    time.time_ns = lambda: real_ns() + int(offset_s * 1e9)


def crash_onnxruntime() -> None:
    """ONNX Runtime that dies of a segmentation fault at its first run, as a broken driver or build does."""
    import os
    import signal

    import onnxruntime as ort

    ort.InferenceSession.run = lambda self, *args, **kwargs: os.kill(os.getpid(), signal.SIGSEGV)


FAKES_LOADER = """import os

if os.environ.get("SMARTBIN_FAKE_CRASH_ONNXRUNTIME"):
    from smartbin_fakes import crash_onnxruntime

    crash_onnxruntime()

if os.environ.get("SMARTBIN_FAKE_CLOCK_OFFSET_S"):
    from smartbin_fakes import shift_wall_clock

    shift_wall_clock(float(os.environ["SMARTBIN_FAKE_CLOCK_OFFSET_S"]))

if os.environ.get("SMARTBIN_FAKE_TENSORRT_BUILD_S"):
    from smartbin_fakes import install_slow_tensorrt

    resets = os.environ.get("SMARTBIN_FAKE_TENSORRT_RESETS_AFTER")
    install_slow_tensorrt(float(os.environ["SMARTBIN_FAKE_TENSORRT_BUILD_S"]), resets_after=resets and int(resets))
"""


def fakes_path(folder: Path) -> Path:
    """A folder for PYTHONPATH that makes a Python process see the fakes its variables ask for (a TensorRT
    provider, a wall clock off): this module as ``smartbin_fakes`` and a ``sitecustomize`` that installs them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), folder / "smartbin_fakes.py")
    (folder / "sitecustomize.py").write_text(FAKES_LOADER)
    return folder
