"""What measures or simulates: bench worker, accuracy on a dataset, fleet simulator, local broker."""
