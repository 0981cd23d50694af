"""smartbin workstation side: datasets, training, export. Imports TensorFlow lazily."""
