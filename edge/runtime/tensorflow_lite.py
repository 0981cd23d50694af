"""tf.lite from a full TensorFlow install: a workstation fallback, never installed on devices."""

import importlib
from types import ModuleType, SimpleNamespace

from edge.runtime.tflite import TFLiteEngine


class TensorFlowLiteEngine(TFLiteEngine):
    backend = "tensorflow"

    def interpreter_module(self) -> ModuleType:
        # Imported by name only when this backend is chosen: edge/ never imports TensorFlow by itself.
        tf = importlib.import_module("tensorflow")
        return SimpleNamespace(Interpreter=tf.lite.Interpreter, load_delegate=tf.lite.experimental.load_delegate)


ENGINE = TensorFlowLiteEngine
