"""LiteRT (ai-edge-litert): the default backend, 2-3x faster than tflite-runtime 2.14 here."""

from edge.runtime.tflite import TFLiteEngine


class LiteRTEngine(TFLiteEngine):
    backend = "litert"
    module = "ai_edge_litert.interpreter"


ENGINE = LiteRTEngine
