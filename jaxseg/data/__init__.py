"""Datasets (TFDS builders) and the input pipeline."""
