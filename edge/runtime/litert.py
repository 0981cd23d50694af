"""LiteRT (ai-edge-litert): the default backend, 2-3x faster than tflite-runtime 2.14 here."""

from types import ModuleType

from edge.runtime.tflite import TFLiteEngine


class LiteRTEngine(TFLiteEngine):
    backend = "litert"

    @staticmethod
    def interpreter_module() -> ModuleType:
        from ai_edge_litert import interpreter

        return interpreter


ENGINE = LiteRTEngine
