"""smartbin device side: everything that runs on the bin. Never imports TensorFlow."""

__version__ = "0.1.0"
