import math

import jax
import numpy as np
import pytest

from jaxseg.ops import BoxCoder, box_area, box_iou, clip_boxes, valid_box_mask


def reference_iou(a, b):
    """IoU by loops over pairs, straight from the definition."""
    out = np.zeros((len(a), len(b)))
    for i, (ax1, ay1, ax2, ay2) in enumerate(a):
        for j, (bx1, by1, bx2, by2) in enumerate(b):
            area_a = max(ax2 - ax1, 0) * max(ay2 - ay1, 0)
            area_b = max(bx2 - bx1, 0) * max(by2 - by1, 0)
            inter = max(min(ax2, bx2) - max(ax1, bx1), 0) * max(min(ay2, by2) - max(ay1, by1), 0)
            union = area_a + area_b - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def random_boxes(rng, n, low=-50.0, high=250.0):
    xy = rng.uniform(low, high, (n, 2))
    wh = rng.uniform(0.0, 80.0, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_box_area_hand_computed():
    boxes = np.array([[0, 0, 4, 3], [1, 1, 1, 5], [5, 5, 2, 8], [-2, -2, 2, 0]], np.float32)
    np.testing.assert_allclose(box_area(boxes), [12.0, 0.0, 0.0, 8.0])


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [0, 0, 1, 2]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0, 0.5]], rtol=1e-6)


def test_box_iou_matches_loop_reference_on_random_and_degenerate_boxes():
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 37)
    b = random_boxes(rng, 23)
    a[:3] = [[5, 5, 5, 9], [3, 3, 1, 1], [0, 0, 0, 0]]  # zero-width, inverted, zero box
    b[0] = a[0]
    iou = np.asarray(box_iou(a, b))
    assert iou.shape == (37, 23) and iou.dtype == np.float32
    assert np.all(np.isfinite(iou))
    np.testing.assert_allclose(iou, reference_iou(a, b), atol=1e-6)
    assert np.all(iou[:3] == 0.0)


def test_box_iou_empty_inputs_and_bad_shapes():
    assert box_iou(np.zeros((0, 4)), np.zeros((5, 4))).shape == (0, 5)
    with pytest.raises(ValueError, match="a must have"):
        box_iou(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="b must have rank 2"):
        box_iou(np.zeros((3, 4)), np.zeros((2, 2, 4)))


def test_box_iou_jit_and_vmap_agree():
    rng = np.random.default_rng(1)
    a = np.stack([random_boxes(rng, 6) for _ in range(3)])
    b = np.stack([random_boxes(rng, 4) for _ in range(3)])
    batched = jax.jit(jax.vmap(box_iou))(a, b)
    for i in range(3):
        np.testing.assert_allclose(batched[i], reference_iou(a[i], b[i]), atol=1e-6)


def test_clip_boxes_partly_and_fully_outside():
    boxes = np.array([[-10, -5, 50, 30], [90, 70, 130, 95], [200, 200, 300, 300], [10, 10, 20, 20]], np.float32)
    clipped = np.asarray(jax.jit(clip_boxes)(boxes, 80, 100))
    np.testing.assert_array_equal(
        clipped, [[0, 0, 50, 30], [90, 70, 100, 80], [100, 80, 100, 80], [10, 10, 20, 20]]
    )
    assert not valid_box_mask(clipped)[2]


def test_valid_box_mask_min_size_and_non_finite():
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 0, 10], [5, 5, 4, 9], [0, 0, 2, 10], [0, 0, np.nan, 4], [0, 0, 3, 3]], np.float32
    )
    np.testing.assert_array_equal(valid_box_mask(boxes), [True, False, False, True, False, True])
    np.testing.assert_array_equal(valid_box_mask(boxes, min_size=2.0), [True, False, False, False, False, True])
    assert valid_box_mask(np.zeros((2, 3, 4))).shape == (2, 3)


def reference_encode(box, anchor, weights):
    wx, wy, ww, wh = weights
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    bw, bh = box[2] - box[0], box[3] - box[1]
    ax, ay = anchor[0] + aw / 2, anchor[1] + ah / 2
    bx, by = box[0] + bw / 2, box[1] + bh / 2
    return [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * math.log(bw / aw), wh * math.log(bh / ah)]


def test_box_coder_encode_matches_reference_and_round_trips():
    rng = np.random.default_rng(2)
    # Sizes 5 to 85, so log size ratios stay below the decoding clamp.
    anchors = random_boxes(rng, 50) + np.array([0, 0, 5, 5], np.float32)
    boxes = random_boxes(rng, 50) + np.array([0, 0, 5, 5], np.float32)
    coder = BoxCoder()
    deltas = np.asarray(coder.encode(boxes, anchors))
    expected = [reference_encode(b, a, coder.weights) for b, a in zip(boxes.astype(np.float64), anchors)]
    np.testing.assert_allclose(deltas, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(coder.decode(deltas, anchors), boxes, rtol=1e-4, atol=1e-2)


def test_box_coder_hand_computed_decode_and_clamp():
    coder = BoxCoder(weights=(1.0, 2.0, 1.0, 1.0))
    anchor = np.array([0, 0, 10, 20], np.float32)  # center (5, 10), size 10 x 20
    np.testing.assert_allclose(coder.decode([0.5, 1.0, 0.0, math.log(2.0)], anchor), [5, 0, 15, 40], rtol=1e-6)
    huge = np.asarray(coder.decode([0.0, 0.0, 50.0, -50.0], anchor))
    width = 10 * 1000 / 16
    np.testing.assert_allclose(huge[[0, 2]], [5 - width / 2, 5 + width / 2], rtol=1e-5)
    assert np.all(np.isfinite(huge))


def test_box_coder_batch_dims_broadcast_and_zero_size_boxes():
    rng = np.random.default_rng(3)
    anchors = random_boxes(rng, 8) + np.array([0, 0, 1, 1], np.float32)
    boxes = np.stack([random_boxes(rng, 8) for _ in range(2)])
    coder = BoxCoder()
    deltas = coder.encode(boxes, anchors)
    assert deltas.shape == (2, 8, 4)
    np.testing.assert_allclose(deltas[1], coder.encode(boxes[1], anchors), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(coder.decode, (0, None)))(deltas, anchors)[0],
                               coder.decode(deltas[0], anchors), rtol=1e-6)
    assert np.all(np.isfinite(coder.encode(np.zeros((8, 4)), anchors)))


def test_box_coder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="weights"):
        BoxCoder(weights=(1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="deltas"):
        BoxCoder().decode(np.zeros((3, 5)), np.zeros((3, 4)))
