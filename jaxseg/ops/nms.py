"""Greedy non-maximum suppression with static output shapes (tiled, `lax.while_loop`).

The result is exactly that of plain greedy NMS: visit boxes by descending score, keep a
box unless a kept box overlaps it with IoU strictly greater than `iou_threshold`. Equal
scores are visited in order of increasing index (a stable sort), so ties go to the lower
index. The kept indices come out in the order they were kept, padded with -1.

Design (measured on a shared, loaded 2-core x86 CPU, jitted, medians; the tests check
exactness): boxes are sorted once and processed in tiles of `tile_size`. A tile is first
checked against the boxes kept so far, held in a compact buffer of at most
`max_output_size` boxes (one `[tile, max_output_size]` IoU block), then resolved inside
itself by iterating `keep = candidate & ~any(keep_j & IoU_ji > t, j < i)` to its fixed
point, which is unique and equals greedy NMS (box i's status depends only on boxes before
it, so after k rounds the first k boxes are final). The loop stops as soon as
`max_output_size` boxes are kept. Measured alternatives, all exact:
- one box per `while_loop` step (argmax of the remaining candidates, suppress by its IoU
  row): 1.0 ms for 1,000 boxes but 9-10 ms for 5,000 boxes keeping 1,000, because of the
  per-step loop overhead;
- the full `[N, N]` IoU matrix plus a `fori_loop` sweep over the rows: 0.7 ms for 1,000
  boxes, 16-24 ms for 5,000 (quadratic work and memory);
- this tiled loop: 0.2-1.3 ms for 1,000 boxes and 0.8-2.2 ms for 5,000 (keeping 100 to
  1,000; torchvision's C++ `nms` took 2.4-5.9 ms and 54-126 ms on the same inputs).
  Tiles of 64 to 256 were within noise of each other on the CPU; 128 is the default, and
  larger tiles suit matrix units on accelerators. Checking a tile against the kept buffer
  chunk by chunk (only its filled part, in a `fori_loop`) was not faster in any case
  measured, and slower when keeping thousands of boxes.
"""
import jax
import jax.numpy as jnp

from jaxseg.ops.boxes import box_iou, check_boxes


def nms(boxes, scores, iou_threshold, max_output_size: int, *, valid=None, score_threshold=-jnp.inf, tile_size=128):
    """Greedy NMS of `boxes [N, 4]` float32 with `scores [N]` float32.

    Returns `[max_output_size]` int32 indices into `boxes` of the kept boxes in descending
    score order (ties: lower index first), padded with -1. Only boxes with
    `score > score_threshold` (so never a `-inf` or NaN score) and, if given,
    `valid [N]` bool True can be kept, so padded boxes are ignored. `iou_threshold` may be
    traced; `max_output_size` and `tile_size` are static Python ints.
    """
    return _greedy_nms(boxes, scores, None, iou_threshold, max_output_size, valid, score_threshold, tile_size)


def batched_nms(
    boxes, scores, classes, iou_threshold, max_output_size: int, *, valid=None, score_threshold=-jnp.inf, tile_size=128
):
    """Class-aware greedy NMS: as `nms`, but a box only suppresses boxes of its own class.

    `classes [N]` integer labels. Returns `[max_output_size]` int32 indices in descending
    score order over all classes, padded with -1. Classes are compared exactly (no
    coordinate offsets), so the result equals running `nms` per class and merging by score.
    """
    classes = jnp.asarray(classes)
    if classes.shape != jnp.shape(scores) or not jnp.issubdtype(classes.dtype, jnp.integer):
        raise ValueError(f"classes must be integers of the same shape as scores, got {classes.dtype}{classes.shape}")
    return _greedy_nms(boxes, scores, classes, iou_threshold, max_output_size, valid, score_threshold, tile_size)


def _check_inputs(boxes, scores, valid, max_output_size, tile_size):
    boxes = check_boxes(boxes, "boxes", rank=2)
    scores = jnp.asarray(scores, jnp.float32)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape [N] = {boxes.shape[:1]}, got {scores.shape}")
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid)
    if valid.shape != scores.shape or valid.dtype != jnp.bool_:
        raise ValueError(f"valid must be bool of shape {scores.shape}, got {valid.dtype}{valid.shape}")
    if not isinstance(max_output_size, int) or max_output_size < 0:
        raise ValueError(f"max_output_size must be a non-negative Python int, got {max_output_size!r}")
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive Python int, got {tile_size!r}")
    return boxes, scores, valid


def _overlapping(boxes_a, classes_a, boxes_b, classes_b, iou_threshold):
    """`[len(a), len(b)]` bool: pairs that suppress each other (same class if classes given)."""
    over = box_iou(boxes_a, boxes_b) > iou_threshold
    if classes_a is None:
        return over
    return over & (classes_a[:, None] == classes_b[None, :])


def _resolve_tile(candidate, over_within):
    """Greedy keep flags `[T]` of a score-sorted tile, given `over_within [T, T]` (j < i only)."""

    def not_converged(state):
        return state[1]

    def step(state):
        keep, _ = state
        new_keep = candidate & ~jnp.any(over_within & keep[:, None], axis=0)
        return new_keep, jnp.any(new_keep != keep)

    return jax.lax.while_loop(not_converged, step, (candidate, jnp.bool_(True)))[0]


def _greedy_nms(boxes, scores, classes, iou_threshold, max_output_size, valid, score_threshold, tile_size):
    boxes, scores, valid = _check_inputs(boxes, scores, valid, max_output_size, tile_size)
    num_boxes = boxes.shape[0]
    if num_boxes == 0 or max_output_size == 0:
        return jnp.full((max_output_size,), -1, jnp.int32)

    candidate = valid & (scores > score_threshold)
    order = jnp.argsort(-jnp.where(candidate, scores, -jnp.inf), stable=True).astype(jnp.int32)
    tile = min(tile_size, num_boxes)
    num_tiles = -(-num_boxes // tile)
    pad = num_tiles * tile - num_boxes
    sorted_boxes = jnp.pad(boxes[order], ((0, pad), (0, 0)))
    sorted_candidate = jnp.pad(candidate[order], (0, pad))
    sorted_classes = None if classes is None else jnp.pad(classes[order], (0, pad))
    order = jnp.pad(order, (0, pad), constant_values=-1)
    buffer_size = min(max_output_size, num_tiles * tile)
    earlier_in_tile = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]

    def tile_slice(values, t):
        return None if values is None else jax.lax.dynamic_slice_in_dim(values, t * tile, tile)

    def more_to_do(state):
        t, num_kept = state[:2]
        return (t < num_tiles) & (num_kept < max_output_size)

    def process_tile(state):
        t, num_kept, kept_boxes, kept_classes, kept_indices = state
        tile_boxes, tile_classes = tile_slice(sorted_boxes, t), tile_slice(sorted_classes, t)
        # Zero boxes in the unused part of the buffer have IoU 0, so they never suppress.
        by_kept = _overlapping(tile_boxes, tile_classes, kept_boxes, kept_classes, iou_threshold)
        tile_candidate = tile_slice(sorted_candidate, t) & ~jnp.any(by_kept, axis=1)
        within = _overlapping(tile_boxes, tile_classes, tile_boxes, tile_classes, iou_threshold)
        keep = _resolve_tile(tile_candidate, within & earlier_in_tile)
        slot = num_kept + jnp.cumsum(keep) - 1
        slot = jnp.where(keep & (slot < buffer_size), slot, buffer_size)
        kept_boxes = kept_boxes.at[slot].set(tile_boxes, mode="drop")
        if kept_classes is not None:
            kept_classes = kept_classes.at[slot].set(tile_classes, mode="drop")
        kept_indices = kept_indices.at[slot].set(tile_slice(order, t), mode="drop")
        return t + 1, num_kept + jnp.sum(keep, dtype=jnp.int32), kept_boxes, kept_classes, kept_indices

    initial = (
        jnp.int32(0),
        jnp.int32(0),
        jnp.zeros((buffer_size, 4), jnp.float32),
        None if classes is None else jnp.zeros((buffer_size,), sorted_classes.dtype),
        jnp.full((buffer_size,), -1, jnp.int32),
    )
    kept_indices = jax.lax.while_loop(more_to_do, process_tile, initial)[4]
    return jnp.pad(kept_indices, (0, max_output_size - buffer_size), constant_values=-1)
