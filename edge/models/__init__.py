"""The model's life on the device: the versioned store, which model serves, over-the-air updates."""
