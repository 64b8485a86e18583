"""RoI Align and FPN multi-level RoI Align on channels-last feature maps (RoI Pool: `roi_pool`).

Semantics follow the reference CUDA/C++ kernels of detectron2/torchvision exactly:

* A box `(x1, y1, x2, y2)` in image pixels is scaled by `spatial_scale`; with
  `aligned=True` its corners are shifted by -0.5 pixel, with `aligned=False` its width
  and height are raised to at least 1 feature pixel.
* Each of the `h x w` bins is sampled at `sampling_ratio x sampling_ratio` regular
  points, each read bilinearly and averaged. A sample lying more than one pixel outside
  the map (`y < -1` or `y > H`, same for x) reads 0; coordinates in `[-1, 0]` clamp to 0
  and coordinates past the last row/column read the last row/column.
* `sampling_ratio <= 0` (the reference's adaptive `ceil(roi_size / output_size)`
  samples per box) depends on the box values, so it cannot have a static shape: it is
  rejected with a `ValueError`.

Bilinear sampling is separable: a sample's weight is the product of a weight along y
and one along x, and an out-of-map sample has weight 0 along the offending axis. Each
box therefore gives `2 * h * s` row taps and `2 * w * s` column taps (the low and high
neighbour of every sample) with their weights. Two implementations use them:

* ``method="gather"`` (the default): per box, gather the whole `[h, w, 4 s^2]` grid of
  neighbours at once from the channels-last map (each gathered item is a contiguous
  C-vector) and reduce it with the products of row and column weights. It does the
  minimal work. On the CPU the boxes go through a sequential loop a few at a time
  (`boxes_per_step`, about `CPU_STEP_BYTES` of gathered grid per step): one gather for
  all 512 boxes of the benchmark materializes 0.4-1.6 GB and was about 6x slower. Measured
  on 2 loaded cores (`benchmarks/ops.py`, [200, 200, 256] map, 512 boxes): forward
  0.17x / 0.30x torchvision's C++ kernel at 7x7 / 14x14, forward+backward 0.15x / 0.14x.
  On accelerators all boxes run in one step (gathers are cheap on GPUs).
* ``method="einsum"``: per box, dense `[h, H]` and `[w, W]` interpolation matrices
  (one-hot rows times bilinear weights) applied to the map with two `einsum`s (default
  matmul precision). It does `O(K * w * H * W * C)` multiply-adds, 6x torchvision's
  time on the CPU, but only matrix products, which suits TPU matrix units, where gathers
  are slow.

Gradients flow to `features` only; boxes are treated as constants (as in Mask R-CNN).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

METHODS = ("gather", "einsum")
# Gathered bytes per sequential step of the gather method on the CPU: a chunk of boxes
# whose neighbour grid stays near cache size is several times faster than one big gather.
CPU_STEP_BYTES = 4 * 2**20


def _output_hw(output_size) -> tuple[int, int]:
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if (
        not isinstance(output_size, (tuple, list))
        or len(output_size) != 2
        or not all(isinstance(n, int) for n in output_size)
        or min(output_size) < 1
    ):
        raise ValueError(
            f"output_size must be a positive int or a pair of positive ints, got {output_size!r}"
        )
    return tuple(output_size)


def _check_sampling_ratio(sampling_ratio) -> None:
    if not isinstance(sampling_ratio, int) or sampling_ratio < 1:
        raise ValueError(
            "sampling_ratio must be a positive int; the reference's adaptive mode "
            "(sampling_ratio <= 0, ceil(roi_size / output_size) samples) needs a "
            f"data-dependent shape and is not supported, got {sampling_ratio!r}"
        )


def _check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_features(features, name="features") -> None:
    if features.ndim != 3 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"{name} must have shape [H, W, C] with H, W >= 1, got {features.shape}")


def _check_boxes(boxes) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [K, 4], got {boxes.shape}")


def checked_single_map_inputs(features, boxes, output_size):
    """Validated `(features [H, W, C], float32 boxes [K, 4] without gradient, (h, w))`."""
    features = jnp.asarray(features)
    boxes = jax.lax.stop_gradient(jnp.asarray(boxes, jnp.float32))
    _check_features(features)
    _check_boxes(boxes)
    return features, boxes, _output_hw(output_size)


def exact_divide(numerator, denominator):
    """`numerator / denominator` (a Python number) as a true IEEE float32 division.

    XLA rewrites division by a constant or by a broadcast scalar into multiplication by
    the reciprocal, which is sometimes one ulp off; the reference kernels divide, and
    RoI Pool's floor/ceil bin edges (and RoI Align's in-map test) depend on the exact
    quotient. A divisor of the numerator's shape behind an optimization barrier keeps
    the division a division under jit and vmap.
    """
    divisor = jax.lax.optimization_barrier(numerator * 0.0 + denominator)
    return numerator / divisor


def _axis_taps(start, extent, bins, samples, length):
    """Bilinear taps of one box along one axis.

    Args:
      start, extent: scalar float32, the RoI start and size in feature pixels.
      bins, samples: static ints, output bins and samples per bin along the axis.
      length: scalar int32 (may be traced), the map size along the axis.

    Returns:
      indices `[bins, 2 * samples] int32` (low and high neighbour of each sample) and
      weights `[bins, 2 * samples] float32`, scaled by `1 / samples` and zero for
      samples more than one pixel outside the map.
    """
    bin_size = exact_divide(extent, bins)
    bin_index = jnp.arange(bins, dtype=jnp.float32)[:, None]
    sample_index = jnp.arange(samples, dtype=jnp.float32)[None, :]
    coords = start + bin_index * bin_size + exact_divide((sample_index + 0.5) * bin_size, samples)
    last = (length - 1).astype(jnp.float32)
    inside = (coords >= -1.0) & (coords <= length.astype(jnp.float32))
    clamped = jnp.clip(coords, 0.0, last)
    low = jnp.floor(clamped)
    frac = clamped - low
    low = low.astype(jnp.int32)
    high = jnp.minimum(low + 1, length - 1)
    scale = jnp.where(inside, 1.0 / samples, 0.0)
    indices = jnp.stack([low, high], axis=-1).reshape(bins, 2 * samples)
    weights = jnp.stack([(1.0 - frac) * scale, frac * scale], axis=-1)
    return indices, weights.reshape(bins, 2 * samples)


def _box_taps(box, scale, height, width, output_hw, samples, aligned):
    """Row and column taps `(y_idx, y_w, x_idx, x_w)` of one box, see `_axis_taps`."""
    offset = 0.5 if aligned else 0.0
    x1 = box[0] * scale - offset
    y1 = box[1] * scale - offset
    roi_w = box[2] * scale - offset - x1
    roi_h = box[3] * scale - offset - y1
    if not aligned:
        roi_w = jnp.maximum(roi_w, 1.0)
        roi_h = jnp.maximum(roi_h, 1.0)
    y_idx, y_w = _axis_taps(y1, roi_h, output_hw[0], samples, height)
    x_idx, x_w = _axis_taps(x1, roi_w, output_hw[1], samples, width)
    return y_idx, y_w, x_idx, x_w


def _gather_box(flat_features, offset, width, y_idx, y_w, x_idx, x_w):
    """One box pooled from a flattened map `[N, C]` whose level starts at row `offset`.

    Gathers the `[h, w, 4 s^2]` neighbour grid of the box (each item a C-vector) and
    reduces it with the products of the row and column weights; returns `[h, w, C]`.
    """
    out_h, taps_y = y_idx.shape
    out_w, taps_x = x_idx.shape
    rows = offset + y_idx[:, None, :, None] * width + x_idx[None, :, None, :]
    weights = y_w[:, None, :, None] * x_w[None, :, None, :]
    grid = flat_features[rows.reshape(out_h, out_w, taps_y * taps_x)]
    weights = weights.reshape(out_h, out_w, taps_y * taps_x, 1).astype(grid.dtype)
    return jnp.sum(grid * weights, axis=2)


def _dense_weights(indices, weights, length):
    """`[bins, length]` interpolation matrix from taps `[bins, T]`."""
    one_hot = indices[..., None] == jnp.arange(length)
    return jnp.sum(jnp.where(one_hot, weights[..., None], 0.0), axis=1)


def _einsum_box(features, y_idx, y_w, x_idx, x_w):
    """One box pooled from `features [H, W, C]` with dense interpolation matrices."""
    height, width, _ = features.shape
    rows = _dense_weights(y_idx, y_w, height).astype(features.dtype)
    cols = _dense_weights(x_idx, x_w, width).astype(features.dtype)
    by_column = jnp.einsum("qx,yxc->qyc", cols, features)
    return jnp.einsum("py,qyc->pqc", rows, by_column)


def _boxes_per_step(boxes_per_step, output_hw, samples, channels, itemsize):
    """Boxes handled per step by the gather method; None means all boxes at once."""
    if boxes_per_step is not None:
        if not isinstance(boxes_per_step, int) or boxes_per_step < 1:
            raise ValueError(f"boxes_per_step must be a positive int or None, got {boxes_per_step!r}")
        return boxes_per_step
    if jax.default_backend() != "cpu":
        return None
    grid_bytes = output_hw[0] * output_hw[1] * 4 * samples * samples * channels * itemsize
    return max(2, CPU_STEP_BYTES // grid_bytes)


def _map_boxes(fn, per_box_args, boxes_per_step):
    """`fn` over the leading axis of `per_box_args`, `boxes_per_step` boxes at a time."""
    num_boxes = per_box_args[0].shape[0]
    if boxes_per_step is None or boxes_per_step >= num_boxes:
        return jax.vmap(fn)(per_box_args)
    return jax.lax.map(fn, per_box_args, batch_size=boxes_per_step)


@functools.partial(jax.jit, static_argnames=("output_hw", "samples", "aligned", "boxes_per_step"))
def _gather_pool(flat_features, boxes, scales, heights, widths, offsets, output_hw,
                 samples, aligned, boxes_per_step):
    """Gather-method RoI Align of `boxes [K, 4]` on levels packed in `flat_features [N, C]`.

    `scales`, `heights`, `widths`, `offsets` (`[K]`) give each box's level: its spatial
    scale, size and first row in `flat_features`. Returns `[K, h, w, C]`.
    """
    def pool_one(args):
        box, scale, height, width, offset = args
        taps = _box_taps(box, scale, height, width, output_hw, samples, aligned)
        return _gather_box(flat_features, offset, width, *taps)

    return _map_boxes(pool_one, (boxes, scales, heights, widths, offsets), boxes_per_step)


@functools.partial(jax.jit, static_argnames=("scale", "output_hw", "samples", "aligned"))
def _einsum_pool(features, boxes, scale, output_hw, samples, aligned):
    """Einsum-method RoI Align of `boxes [K, 4]` on `features [H, W, C]` -> `[K, h, w, C]`."""
    height, width, _ = features.shape

    def pool_one(box):
        taps = _box_taps(box, scale, jnp.int32(height), jnp.int32(width), output_hw,
                         samples, aligned)
        return _einsum_box(features, *taps)

    return jax.vmap(pool_one)(boxes)


def roi_align(
    features,
    boxes,
    output_size,
    spatial_scale=1.0,
    sampling_ratio=2,
    aligned=True,
    *,
    method="gather",
    boxes_per_step=None,
):
    """RoI Align (Mask R-CNN) of `boxes` on one feature map.

    Args:
      features: `[H, W, C]` float feature map.
      boxes: `[K, 4]` float boxes `(x1, y1, x2, y2)` in image pixels (K may be 0).
      output_size: int or `(h, w)`, bins per box.
      spatial_scale: feature pixels per image pixel (e.g. 1/4), a Python number.
      sampling_ratio: positive int, samples per bin along each axis.
      aligned: shift boxes by -0.5 pixel (detectron2's `aligned=True`).
      method: "gather" or "einsum", see the module docstring.
      boxes_per_step: gather method only: boxes pooled per step of a sequential loop
        (bounds the gathered intermediate); None picks about `CPU_STEP_BYTES` per step
        on the CPU and all boxes at once on accelerators.

    Returns:
      `[K, h, w, C]` pooled features, dtype of `features`.
    """
    features, boxes, output_hw = checked_single_map_inputs(features, boxes, output_size)
    _check_sampling_ratio(sampling_ratio)
    _check_method(method)
    if method == "einsum":
        return _einsum_pool(features, boxes, float(spatial_scale), output_hw, sampling_ratio, aligned)
    height, width, channels = features.shape
    step = _boxes_per_step(boxes_per_step, output_hw, sampling_ratio, channels,
                           features.dtype.itemsize)
    num_boxes = boxes.shape[0]
    per_box = [jnp.full((num_boxes,), value, dtype)
               for value, dtype in ((spatial_scale, jnp.float32), (height, jnp.int32),
                                    (width, jnp.int32), (0, jnp.int32))]
    return _gather_pool(features.reshape(height * width, channels), boxes, *per_box,
                        output_hw, sampling_ratio, aligned, step)


def fpn_levels(boxes, min_level, max_level, canonical_level=4, canonical_size=224.0):
    """FPN level of each box: `floor(canonical_level + log2(sqrt(w * h) / canonical_size))`.

    Args:
      boxes: `[K, 4]` float boxes in image pixels; negative widths/heights count as 0.
      min_level, max_level: the available levels; results are clamped to them.

    Returns:
      `[K] int32` levels.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    _check_boxes(boxes)
    widths = jnp.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    heights = jnp.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    levels = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(widths * heights) / canonical_size))
    return jnp.clip(levels, min_level, max_level).astype(jnp.int32)


def multilevel_roi_align(
    feature_pyramid: Sequence,
    boxes,
    output_size,
    sampling_ratio=2,
    aligned=True,
    *,
    min_level=2,
    canonical_level=4,
    canonical_size=224.0,
    method="gather",
    boxes_per_step=None,
):
    """RoI Align of each box on its FPN level (Feature Pyramid Networks, eq. 1).

    Args:
      feature_pyramid: sequence of `[H_l, W_l, C]` maps; entry `i` is level
        `min_level + i`, with spatial scale `1 / 2 ** (min_level + i)` (P2..P5 of an
        800x800 image: 200x200, 100x100, 50x50, 25x25).
      boxes: `[K, 4]` float boxes in image pixels.
      output_size, sampling_ratio, aligned, method, boxes_per_step: as in `roi_align`.
      min_level: level of `feature_pyramid[0]`.
      canonical_level, canonical_size: a box of `canonical_size` pixels (sqrt of area)
        goes to `canonical_level`; levels are clamped to the pyramid (`fpn_levels`).

    Returns:
      `[K, h, w, C]` pooled features.
    """
    if len(feature_pyramid) == 0:
        raise ValueError("feature_pyramid must hold at least one [H, W, C] map")
    feature_pyramid = [jnp.asarray(level) for level in feature_pyramid]
    for index, level_map in enumerate(feature_pyramid):
        _check_features(level_map, name=f"feature_pyramid[{index}]")
    channels = {level_map.shape[2] for level_map in feature_pyramid}
    if len(channels) != 1:
        raise ValueError(f"feature_pyramid maps must share their channel count, got {sorted(channels)}")
    boxes = jax.lax.stop_gradient(jnp.asarray(boxes, jnp.float32))
    _check_boxes(boxes)
    output_hw = _output_hw(output_size)
    _check_sampling_ratio(sampling_ratio)
    _check_method(method)
    max_level = min_level + len(feature_pyramid) - 1
    box_level = fpn_levels(boxes, min_level, max_level, canonical_level, canonical_size) - min_level
    scales = [2.0 ** -(min_level + index) for index in range(len(feature_pyramid))]
    if method == "einsum":
        pooled = jnp.zeros((boxes.shape[0], *output_hw, channels.pop()), feature_pyramid[0].dtype)
        for index, (level_map, scale) in enumerate(zip(feature_pyramid, scales)):
            on_level = (box_level == index)[:, None, None, None]
            level_pooled = _einsum_pool(level_map, boxes, scale, output_hw, sampling_ratio, aligned)
            pooled = pooled + jnp.where(on_level, level_pooled, 0)
        return pooled
    sizes = [level_map.shape[0] * level_map.shape[1] for level_map in feature_pyramid]
    offsets = [sum(sizes[:index]) for index in range(len(sizes))]
    flat = jnp.concatenate([level_map.reshape(-1, level_map.shape[2]) for level_map in feature_pyramid])

    def per_box(values, dtype):
        return jnp.asarray(values, dtype)[box_level]

    step = _boxes_per_step(boxes_per_step, output_hw, sampling_ratio, flat.shape[1],
                           flat.dtype.itemsize)
    return _gather_pool(
        flat, boxes,
        per_box(scales, jnp.float32),
        per_box([m.shape[0] for m in feature_pyramid], jnp.int32),
        per_box([m.shape[1] for m in feature_pyramid], jnp.int32),
        per_box(offsets, jnp.int32),
        output_hw, sampling_ratio, aligned, step,
    )
