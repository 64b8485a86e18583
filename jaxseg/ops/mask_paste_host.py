"""Host-side (numpy) mask pasting at any resolution, for `MaskRCNN.detect(..., paste=False)`.

`paste_mask` has exactly the semantics of `ops.paste_masks` (detectron2's
`paste_masks_in_image`: bilinear reading of the `M x M` grid at pixel centres, zero
padding, in float32 with the same weight formula) but computes only the rows and columns
its box can touch: a mask is nonzero only within half a mask cell of the box, and every
other pixel stays 0. Pasting 100 detections into a 1024 x 1024 image costs about as
much as the boxes' areas, not 100 full-image matrix products.

To paste at an image's original resolution, scale `detect`'s boxes (pixels of the
network input) by `original_width / input_width` along x and `original_height /
input_height` along y, where the input size is the image's valid extent (`image_hw`),
not the padded canvas.
"""
from __future__ import annotations

import math

import numpy as np

from jaxseg.ops.mask_targets import _paste_weights


def _touched(start: float, end: float, mask_cells: int, size: int) -> tuple[int, int]:
    """Pixel range `[lo, hi)` along one axis holding every pixel the box reaches (plus a margin).

    Weights are nonzero only for pixel centres within half a mask cell of `[start, start +
    extent]` (`extent` as in `_paste_weights`); `lo >= hi` when the box misses the image.
    """
    extent = max(end - start, 1e-6)
    half_cell = extent / (2 * mask_cells)
    lo = max(math.floor(start - half_cell) - 1, 0)
    hi = min(math.ceil(start + extent + half_cell) + 1, size)
    return lo, hi


def _pasted_region(probabilities, box, height: int, width: int):
    """`(rows, columns, values)`: the slices of a `[height, width]` image the box can reach
    and the pasted float32 values there (empty slices when it reaches none); checks the
    arguments as `paste_mask` documents them."""
    probabilities = np.asarray(probabilities, np.float32)
    box = np.asarray(box, np.float32)
    if probabilities.ndim != 2 or probabilities.shape[0] != probabilities.shape[1]:
        raise ValueError(f"probabilities must have shape [M, M], got {probabilities.shape}")
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"box must be four finite numbers (x1, y1, x2, y2), got {box}")
    for name, size in (("height", height), ("width", width)):
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")
    mask_cells = probabilities.shape[0]
    top, bottom = _touched(float(box[1]), float(box[3]), mask_cells, height)
    left, right = _touched(float(box[0]), float(box[2]), mask_cells, width)
    if top >= bottom or left >= right:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), np.float32)
    rows = _paste_weights(box[1], box[3], mask_cells, np.arange(top, bottom), np)
    cols = _paste_weights(box[0], box[2], mask_cells, np.arange(left, right), np)
    return slice(top, bottom), slice(left, right), rows @ probabilities @ cols.T


def paste_mask(probabilities, box, height: int, width: int) -> np.ndarray:
    """Pastes one `probabilities [M, M]` mask at `box` into a `[height, width]` float32 image.

    Args:
      probabilities: `[M, M]` float mask probabilities (or logits); read as float32.
      box: `(x1, y1, x2, y2)` floats in the target image's pixels (read as float32, as
        `ops.paste_masks` does); it may extend past the image. A box of zero width or
        height pastes nothing.
      height, width: output size (positive ints).

    Returns:
      `[height, width] float32`, equal to `ops.paste_masks(probabilities[None], box[None],
      height, width)[0]` up to float32 rounding; 0 wherever the box cannot reach.
    """
    rows, columns, values = _pasted_region(probabilities, box, height, width)
    image = np.zeros((height, width), np.float32)
    image[rows, columns] = values
    return image


def paste_binary_mask(
    probabilities, box, height: int, width: int, threshold: float = 0.5, out=None
) -> np.ndarray:
    """`paste_mask(...) >= threshold` as `[height, width]` bool (detectron2 binarizes with `>=`).

    `out`: an all-zero `[height, width]` bool or uint8 array (any memory layout, e.g. a
    column-major buffer for `pycocotools.mask.encode`) to write into and return instead;
    only the pixels the box can reach are written.
    """
    rows, columns, region = paste_binary_region(probabilities, box, height, width, threshold)
    if out is None:
        out = np.zeros((height, width), bool)
    elif out.shape != (height, width):
        raise ValueError(f"out must have shape {(height, width)}, got {out.shape}")
    out[rows, columns] = region
    return out


def paste_binary_region(probabilities, box, height: int, width: int, threshold: float = 0.5):
    """`(rows, columns, region)`: the slices of the `[height, width]` image the box can
    reach and `paste_binary_mask` there, bool `[rows, columns]`; the mask is False outside
    them (empty slices when the box reaches no pixel)."""
    rows, columns, values = _pasted_region(probabilities, box, height, width)
    return rows, columns, values >= threshold
