"""`smartbin train`: the model, its input pipeline, where it runs, the feature cache, the time estimate."""
