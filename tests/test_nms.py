import functools

import jax
import numpy as np
import pytest

from jaxseg.ops import batched_nms, nms


def iou_one_to_many(box, boxes):
    """IoU of one box with each of `boxes`, from the definition (float32 like the op)."""
    inter_w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    inter_h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    inter = inter_w * inter_h
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def reference_nms(boxes, scores, iou_threshold, max_output_size, classes=None, valid=None):
    """Plain greedy NMS: visit by descending score (ties by index), keep unless suppressed."""
    boxes = np.asarray(boxes, np.float32)
    classes = np.zeros(len(boxes), int) if classes is None else np.asarray(classes)
    valid = np.ones(len(boxes), bool) if valid is None else np.asarray(valid)
    kept = []
    for i in sorted(range(len(boxes)), key=lambda i: (-scores[i], i)):
        if len(kept) == max_output_size:
            break
        if not valid[i] or not scores[i] > -np.inf:
            continue
        if kept:
            others = np.array(kept)
            same_class = classes[others] == classes[i]
            if np.any((iou_one_to_many(boxes[i], boxes[others]) > iou_threshold) & same_class):
                continue
        kept.append(i)
    return np.array(kept + [-1] * (max_output_size - len(kept)), np.int32)


def random_boxes(rng, n, clustered=False):
    if clustered:
        centers = rng.uniform(0, 400, (8, 2))[rng.integers(0, 8, n)] + rng.normal(0, 10, (n, 2))
        sizes = rng.uniform(20, 80, (n, 2))
        corner = centers - sizes / 2
    else:
        corner = rng.uniform(-20, 380, (n, 2))
        sizes = rng.uniform(5, 60, (n, 2))
    return np.concatenate([corner, corner + sizes], axis=1).astype(np.float32)


jit_nms = jax.jit(nms, static_argnames=("max_output_size", "tile_size"))
jit_batched_nms = jax.jit(batched_nms, static_argnames=("max_output_size", "tile_size"))


@pytest.mark.parametrize(
    "n, max_output_size, iou_threshold, clustered",
    [(300, 50, 0.5, False), (300, 400, 0.3, True), (1000, 1000, 0.7, True), (7, 20, 0.5, False)],
)
def test_nms_matches_greedy_reference_on_random_boxes(n, max_output_size, iou_threshold, clustered):
    rng = np.random.default_rng(n + max_output_size)
    boxes = random_boxes(rng, n, clustered)
    scores = rng.uniform(size=n).astype(np.float32)
    kept = np.asarray(jit_nms(boxes, scores, iou_threshold, max_output_size=max_output_size))
    assert kept.dtype == np.int32 and kept.shape == (max_output_size,)
    np.testing.assert_array_equal(kept, reference_nms(boxes, scores, iou_threshold, max_output_size))


def test_nms_ties_go_to_the_lower_index():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [80, 0, 90, 9]], np.float32)
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.5], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 6), [1, 2, 4, -1, -1, -1])


@pytest.mark.parametrize("tile_size", [1, 2, 3, 128])
def test_nms_is_greedy_not_single_pass_for_any_tile_size(tile_size):
    # A suppresses B, so B cannot suppress C: greedy keeps A and C.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10], [40, 0, 50, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.1], np.float32)
    np.testing.assert_array_equal(jit_nms(boxes, scores, 0.3, max_output_size=4, tile_size=tile_size), [0, 2, 3, -1])


@pytest.mark.parametrize("tile_size", [4, 16, 64])
def test_nms_long_suppression_chain(tile_size):
    # Each box overlaps the next with IoU 7/13; greedy keeps every other box.
    x = np.arange(100, dtype=np.float32) * 3
    boxes = np.stack([x, 0 * x, x + 10, 0 * x + 10], axis=1)
    scores = np.linspace(1.0, 0.0, 100).astype(np.float32)
    kept = np.asarray(jit_nms(boxes, scores, 0.5, max_output_size=60, tile_size=tile_size))
    np.testing.assert_array_equal(kept, list(range(0, 100, 2)) + [-1] * 10)


def test_nms_iou_equal_to_threshold_is_not_suppressed():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 1, 2]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(jit_nms(boxes, scores, 0.5, max_output_size=2), [0, 1])
    np.testing.assert_array_equal(jit_nms(boxes, scores, 0.49, max_output_size=2), [0, -1])


def test_nms_padding_invalid_and_degenerate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [5, 5, 5, 5], [5, 5, 5, 5], [20, 20, 30, 30], [0, 0, 0, 0]],
                     np.float32)
    scores = np.array([0.2, 0.9, 0.8, 0.7, np.nan, -np.inf], np.float32)
    # Degenerate boxes overlap nothing, so both are kept; NaN and -inf scores never are.
    np.testing.assert_array_equal(jit_nms(boxes, scores, 0.5, max_output_size=6), [1, 2, 3, -1, -1, -1])
    valid = np.array([False, True, True, False, True, True])
    np.testing.assert_array_equal(jit_nms(boxes, scores, 0.5, max_output_size=6, valid=valid), [1, 2, -1, -1, -1, -1])
    np.testing.assert_array_equal(
        jit_nms(boxes, scores, 0.5, max_output_size=6, score_threshold=0.75), [1, 2, -1, -1, -1, -1]
    )


def test_nms_empty_inputs_and_zero_outputs():
    np.testing.assert_array_equal(nms(np.zeros((0, 4)), np.zeros((0,)), 0.5, 3), [-1, -1, -1])
    assert nms(np.zeros((5, 4)), np.ones((5,)), 0.5, 0).shape == (0,)


def test_nms_jit_and_vmap_agree_with_unbatched():
    rng = np.random.default_rng(7)
    boxes = np.stack([random_boxes(rng, 200, clustered=True) for _ in range(3)])
    scores = rng.uniform(size=(3, 200)).astype(np.float32)
    scores[1, 100:] = -np.inf  # padded boxes
    batched = jax.jit(jax.vmap(functools.partial(nms, iou_threshold=0.5, max_output_size=64)))(boxes, scores)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], jit_nms(boxes[i], scores[i], 0.5, max_output_size=64))
        np.testing.assert_array_equal(batched[i], reference_nms(boxes[i], scores[i], 0.5, 64))


def test_batched_nms_matches_class_aware_reference():
    rng = np.random.default_rng(11)
    boxes = random_boxes(rng, 400, clustered=True)
    scores = rng.uniform(size=400).astype(np.float32)
    classes = rng.integers(0, 5, 400).astype(np.int32)
    kept = np.asarray(jit_batched_nms(boxes, scores, classes, 0.5, max_output_size=300))
    np.testing.assert_array_equal(kept, reference_nms(boxes, scores, 0.5, 300, classes=classes))
    # Equal to per-class NMS merged by score.
    per_class = []
    for c in range(5):
        kept_in_class = np.asarray(jit_nms(boxes, scores, 0.5, max_output_size=400, valid=classes == c))
        per_class.append(kept_in_class[kept_in_class >= 0])
    merged = np.concatenate(per_class)
    merged = merged[np.argsort(-scores[merged], kind="stable")][:300]
    np.testing.assert_array_equal(kept[: len(merged)], merged)


def test_batched_nms_identical_boxes_of_different_classes_survive():
    boxes = np.array([[0, 0, 10, 10]] * 3, np.float32)
    scores = np.array([0.5, 0.7, 0.6], np.float32)
    np.testing.assert_array_equal(jit_batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5, max_output_size=4),
                                  [1, 2, -1, -1])
    batched = jax.jit(jax.vmap(lambda b, s, c: batched_nms(b, s, c, 0.5, 4)))(
        np.stack([boxes, boxes]), np.stack([scores, scores]), np.array([[0, 1, 0], [2, 2, 2]])
    )
    np.testing.assert_array_equal(batched, [[1, 2, -1, -1], [1, -1, -1, -1]])


def test_nms_rejects_bad_arguments():
    boxes, scores = np.zeros((4, 4), np.float32), np.zeros((4,), np.float32)
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, np.zeros((3,)), 0.5, 2)
    with pytest.raises(ValueError, match="boxes"):
        nms(np.zeros((4, 3)), scores, 0.5, 2)
    with pytest.raises(ValueError, match="max_output_size"):
        nms(boxes, scores, 0.5, -1)
    with pytest.raises(ValueError, match="valid"):
        nms(boxes, scores, 0.5, 2, valid=np.ones(4))
    with pytest.raises(ValueError, match="classes"):
        batched_nms(boxes, scores, np.zeros((4,), np.float32), 0.5, 2)
