"""tflite-runtime 2.14: the last release (2023, numpy < 2); kept as a fallback only."""

from edge.runtime.tflite import TFLiteEngine


class TFLiteRuntimeEngine(TFLiteEngine):
    backend = "tflite_runtime"
    module = "tflite_runtime.interpreter"


ENGINE = TFLiteRuntimeEngine
