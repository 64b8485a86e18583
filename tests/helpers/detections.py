"""Hand-made eval outputs of Mask R-CNN (`detect(..., paste=False)`) for evaluation tests."""

import numpy as np


def empty_detections(rows: int, slots: int, mask_size: int) -> dict[str, np.ndarray]:
    """`rows` images' outputs with `slots` detection slots each, none valid yet: boxes
    [rows, slots, 4], scores, classes, valid, and mask probabilities all ones
    [rows, slots, mask_size, mask_size] (a filled box once pasted)."""
    return {
        "boxes": np.zeros((rows, slots, 4), np.float32),
        "scores": np.zeros((rows, slots), np.float32),
        "classes": np.zeros((rows, slots), np.int32),
        "mask_probabilities": np.ones((rows, slots, mask_size, mask_size), np.float32),
        "valid": np.zeros((rows, slots), bool),
    }
