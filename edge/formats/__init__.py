"""The files and formats shared by the device and the workstation: bundles and their archives and
signatures, labels and bins, datasets, images, JSON files."""
