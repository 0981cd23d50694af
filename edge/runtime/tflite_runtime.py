"""tflite-runtime 2.14: the last release (2023, numpy < 2); kept as a fallback only."""

from types import ModuleType

from edge.runtime.tflite import TFLiteEngine


class TFLiteRuntimeEngine(TFLiteEngine):
    backend = "tflite_runtime"

    @staticmethod
    def interpreter_module() -> ModuleType:
        from tflite_runtime import interpreter

        return interpreter


ENGINE = TFLiteRuntimeEngine
