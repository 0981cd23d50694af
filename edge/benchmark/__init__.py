"""What edge/bench.py runs: the worker process, the report, the peak, accuracy, the terminal output."""
