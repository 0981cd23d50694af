"""What the bin keeps on its disk: the decision outbox, the counters, the samples, one SQLite connection."""
