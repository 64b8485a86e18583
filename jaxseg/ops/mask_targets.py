"""Mask R-CNN mask targets (GT masks cropped to RoIs) and the inverse, pasting masks.

`mask_targets` crops each RoI's matched ground-truth mask with RoI Align, as detectron2
does (`aligned=True`, here with a fixed `sampling_ratio` because the reference's
adaptive one has no static shape), and binarizes at 0.5 by default (detectron2; pass
`binarize=False` for torchvision's soft targets).

`paste_masks` follows detectron2's `paste_masks_in_image`: every image pixel centre is
mapped into the box's `M x M` grid (`u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5`) and read
bilinearly with zero padding (`grid_sample`, `align_corners=False`). Pixels whose centre
is more than half a mask cell outside the box read 0; within that half cell the mask
fades to 0. Bilinear reading is separable, so each box is two small matrix products.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.ops.roi_align import _boxes_per_step, _check_boxes, _check_sampling_ratio, _gather_pool


def mask_targets(gt_masks, matched_gt_index, rois, mask_size=28, *, sampling_ratio=2,
                 aligned=True, binarize=True):
    """Matched ground-truth mask of each RoI, cropped and resized to `M x M`.

    Args:
      gt_masks: `[G, H, W]` masks (bool, int or float) in image pixels.
      matched_gt_index: `[R] int` index of each RoI's ground truth; clipped to
        `[0, G - 1]` (padding RoIs get some mask; the caller masks their loss).
      rois: `[R, 4]` float boxes `(x1, y1, x2, y2)` in image pixels.
      mask_size: M.
      sampling_ratio, aligned: as in `roi_align`.
      binarize: threshold the resized masks at 0.5 (`>= 0.5` gives 1).

    Returns:
      `[R, M, M] float32` targets; all zeros when `G == 0`.
    """
    gt_masks = jnp.asarray(gt_masks)
    matched_gt_index = jnp.asarray(matched_gt_index)
    rois = jax.lax.stop_gradient(jnp.asarray(rois, jnp.float32))
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must have shape [G, H, W], got {gt_masks.shape}")
    _check_boxes(rois)
    if matched_gt_index.shape != (rois.shape[0],):
        raise ValueError(
            f"matched_gt_index must have shape [R] = {(rois.shape[0],)}, got {matched_gt_index.shape}")
    if not isinstance(mask_size, int) or mask_size < 1:
        raise ValueError(f"mask_size must be a positive int, got {mask_size!r}")
    _check_sampling_ratio(sampling_ratio)
    num_gt, height, width = gt_masks.shape
    num_rois = rois.shape[0]
    if num_gt == 0 or height == 0 or width == 0:
        return jnp.zeros((num_rois, mask_size, mask_size), jnp.float32)
    flat = gt_masks.astype(jnp.float32).reshape(num_gt * height * width, 1)
    index = jnp.clip(matched_gt_index.astype(jnp.int32), 0, num_gt - 1)
    output_hw = (mask_size, mask_size)
    step = _boxes_per_step(None, output_hw, sampling_ratio, 1, 4)
    crops = _gather_pool(
        flat, rois,
        jnp.ones((num_rois,), jnp.float32),
        jnp.full((num_rois,), height, jnp.int32),
        jnp.full((num_rois,), width, jnp.int32),
        index * (height * width),
        output_hw, sampling_ratio, aligned, step,
    )[..., 0]
    if binarize:
        return (crops >= 0.5).astype(jnp.float32)
    return crops


def _paste_weights(start, end, mask_cells, pixels, xp=jnp):
    """`[P, mask_cells]` float32 bilinear zero-padded reading weights of `pixels [P]` along one axis.

    `start`, `end`: the box's float32 edges on this axis; `pixels`: int pixel indices.
    `xp` is `jax.numpy` (traced, `paste_masks`) or `numpy` (host, `mask_paste_host`): the
    one formula serves both. It multiplies by `1 / extent` explicitly, as XLA rewrites a
    division by a broadcast scalar, so numpy performs XLA's float32 operations. A box with
    `end <= start` gets all-zero weights.
    """
    inverse_extent = xp.float32(1.0) / xp.maximum(end - start, xp.float32(1e-6))
    position = ((pixels.astype(xp.float32) + xp.float32(0.5) - start) * inverse_extent * mask_cells
                - xp.float32(0.5))
    cell = xp.arange(mask_cells, dtype=xp.float32)
    weights = xp.maximum(xp.float32(0.0), xp.float32(1.0) - xp.abs(position[:, None] - cell[None, :]))
    return xp.where(end > start, weights, xp.float32(0.0))


def paste_masks(mask_probs, boxes, image_height, image_width):
    """Paste each `M x M` mask into a full image at its box (bilinear, zero outside).

    Args:
      mask_probs: `[R, M, M]` float mask probabilities (or logits).
      boxes: `[R, 4]` float boxes `(x1, y1, x2, y2)` in image pixels; a box of zero
        width or height pastes nothing.
      image_height, image_width: static output size.

    Returns:
      `[R, image_height, image_width] float32` pasted masks.
    """
    mask_probs = jnp.asarray(mask_probs, jnp.float32)
    boxes = jnp.asarray(boxes, jnp.float32)
    if mask_probs.ndim != 3 or mask_probs.shape[1] != mask_probs.shape[2]:
        raise ValueError(f"mask_probs must have shape [R, M, M], got {mask_probs.shape}")
    _check_boxes(boxes)
    if boxes.shape[0] != mask_probs.shape[0]:
        raise ValueError(
            f"boxes must hold one box per mask ({mask_probs.shape[0]}), got {boxes.shape[0]}")
    for name, size in (("image_height", image_height), ("image_width", image_width)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")
    mask_cells = mask_probs.shape[1]

    def paste_one(mask, box):
        rows = _paste_weights(box[1], box[3], mask_cells, jnp.arange(image_height))
        cols = _paste_weights(box[0], box[2], mask_cells, jnp.arange(image_width))
        return rows @ mask @ cols.T

    return jax.vmap(paste_one)(mask_probs, boxes)
