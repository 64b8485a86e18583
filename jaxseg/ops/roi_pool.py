"""RoI Pool (Fast R-CNN's quantized RoI max pooling) on a channels-last feature map.

For the RoIAlign vs RoIPool ablation. Each bin's columns are read from sparse tables of
power-of-two row-window maxima, looping over the bin's rows: exact against torchvision,
about 1.1-1.4x its time on the CPU benchmark (`benchmarks/ops.py`). Inputs are checked as
`roi_align`'s; gradients flow to `features` only.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg.ops.roi_align import checked_single_map_inputs, exact_divide


def _round_half_away(values):
    """C's `round`: halves go away from zero (`jnp.round` rounds them to even)."""
    return jnp.sign(values) * jnp.floor(jnp.abs(values) + 0.5)


def _pool_bin_edges(start, end, bins, length):
    """RoI Pool bin edges along one axis: `[bins]` int32 starts and ends in `[0, length]`."""
    roi_size = jnp.maximum(end - start + 1, 1)
    bin_size = exact_divide(roi_size.astype(jnp.float32), bins)
    index = jnp.arange(bins, dtype=jnp.float32)
    lo = jnp.floor(index * bin_size).astype(jnp.int32) + start
    hi = jnp.ceil((index + 1.0) * bin_size).astype(jnp.int32) + start
    return jnp.clip(lo, 0, length), jnp.clip(hi, 0, length)


def _row_max_tables(features):
    """Sparse tables of row-window maxima: values and first columns, each `[J, H, W, C]`.

    Entry `[j, y, x, c]` describes the maximum of `features[y, x:x + 2**j, c]` (windows
    cut at the map's right edge); J = floor(log2 W) + 1.
    """
    width = features.shape[1]
    columns = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32)[None, :, None], features.shape)
    values, argmax = features, columns
    value_tables, argmax_tables = [values], [argmax]
    span = 1
    while 2 * span <= width:
        right_values = jnp.pad(values[:, span:], ((0, 0), (0, span), (0, 0)),
                               constant_values=-jnp.inf)
        right_argmax = jnp.pad(argmax[:, span:], ((0, 0), (0, span), (0, 0)))
        take_right = right_values > values
        values = jnp.where(take_right, right_values, values)
        argmax = jnp.where(take_right, right_argmax, argmax)
        value_tables.append(values)
        argmax_tables.append(argmax)
        span *= 2
    return jnp.stack(value_tables), jnp.stack(argmax_tables)


def _roi_pool_with_argmax(features, boxes, output_hw, spatial_scale):
    """RoI max pooling `[K, h, w, C]` and the flat `y * W + x` argmax of each bin (-1 if empty).

    A bin's columns are covered by two power-of-two windows of the sparse tables (read
    as C-vectors); a while loop walks the bin's rows, keeping the first maximum in
    row-major order as the reference kernel does.
    """
    height, width, _ = features.shape
    value_table, argmax_table = _row_max_tables(features)
    corners = _round_half_away(boxes * spatial_scale).astype(jnp.int32)
    y_lo, y_hi = jax.vmap(_pool_bin_edges, (0, 0, None, None))(
        corners[:, 1], corners[:, 3], output_hw[0], height)
    x_lo, x_hi = jax.vmap(_pool_bin_edges, (0, 0, None, None))(
        corners[:, 0], corners[:, 2], output_hw[1], width)
    y_lo, y_hi = y_lo[:, :, None], y_hi[:, :, None]
    x_lo, x_hi = x_lo[:, None, :], x_hi[:, None, :]
    empty = (y_hi <= y_lo) | (x_hi <= x_lo)
    span_width = jnp.maximum(x_hi - x_lo, 1)
    level = jnp.floor(jnp.log2(span_width.astype(jnp.float32))).astype(jnp.int32)
    level = jnp.clip(level, 0, value_table.shape[0] - 1)
    window_starts = (jnp.clip(x_lo, 0, width - 1), jnp.clip(x_hi - (1 << level), 0, width - 1))

    def row_best(row):
        row = jnp.clip(row, 0, height - 1)
        left, right = ((value_table[level, row, start], argmax_table[level, row, start])
                       for start in window_starts)
        take_right = right[0] > left[0]
        return (jnp.where(take_right, right[0], left[0]),
                row[..., None] * width + jnp.where(take_right, right[1], left[1]))

    def body(state):
        offset, best, best_index = state
        value, index = row_best(y_lo + offset)
        better = ((y_lo + offset < y_hi) & ~empty)[..., None] & (value > best)
        return offset + 1, jnp.where(better, value, best), jnp.where(better, index, best_index)

    shape = (boxes.shape[0], *output_hw, features.shape[2])
    max_rows = jnp.max(jnp.where(empty, 0, y_hi - y_lo), initial=0)
    init = (jnp.int32(0), jnp.full(shape, -jnp.inf, features.dtype), jnp.full(shape, -1, jnp.int32))
    _, best, best_index = jax.lax.while_loop(lambda state: state[0] < max_rows, body, init)
    return jnp.where(best_index >= 0, best, 0).astype(features.dtype), best_index


@functools.partial(jax.jit, static_argnames=("output_hw", "spatial_scale"))
def _roi_pool(features, boxes, output_hw, spatial_scale):
    """`roi_pool` on validated inputs; the gradient is routed through each bin's argmax."""
    @jax.custom_vjp
    def pool(feature_map, rois):
        return _roi_pool_with_argmax(feature_map, rois, output_hw, spatial_scale)[0]

    def pool_forward(feature_map, rois):
        pooled, argmax = _roi_pool_with_argmax(feature_map, rois, output_hw, spatial_scale)
        return pooled, (argmax, rois)

    def pool_backward(residuals, grad):
        argmax, rois = residuals
        height, width, channels = features.shape
        channel = jnp.arange(channels, dtype=jnp.int32)
        target = jnp.where(argmax >= 0, argmax * channels + channel, height * width * channels)
        flat_grad = jnp.zeros(height * width * channels, grad.dtype).at[target.reshape(-1)].add(
            grad.reshape(-1), mode="drop")
        return flat_grad.reshape(features.shape), jnp.zeros_like(rois)

    pool.defvjp(pool_forward, pool_backward)
    return pool(features, boxes)


def roi_pool(features, boxes, output_size, spatial_scale=1.0):
    """Quantized RoI max pooling (Fast R-CNN) as its reference kernel computes it.

    Box corners are scaled and rounded (halves away from zero); the RoI spans
    `max(round(x2 * s) - round(x1 * s) + 1, 1)` pixels; bin `i` covers
    `[floor(i * bin), ceil((i + 1) * bin))` from the RoI start, clipped to the map; each
    bin gives its maximum, an empty bin 0. The gradient goes to the first maximum of each
    bin in row-major order. Boxes get no gradient.

    Args:
      features: `[H, W, C]` float feature map.
      boxes: `[K, 4]` float boxes `(x1, y1, x2, y2)` in image pixels (K may be 0).
      output_size: int or `(h, w)`.
      spatial_scale: feature pixels per image pixel.

    Returns:
      `[K, h, w, C]` pooled features, dtype of `features`.
    """
    features, boxes, output_hw = checked_single_map_inputs(features, boxes, output_size)

    return _roi_pool(features, boxes, output_hw, float(spatial_scale))
