"""Making int8 follow the float model: BatchNorm re-estimated and folded, the layer-by-layer search."""
