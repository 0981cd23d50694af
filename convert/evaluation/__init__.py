"""How good a model is: the report (figures, PNGs, one page), `evaluate` and `predict`."""
