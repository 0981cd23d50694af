"""`smartbin convert`: the variants' writers, the accuracy gate, the second process, the peak probes."""
