"""Mask R-CNN targets and post-processing on a hand-built 64x64 image with two known boxes.

Ground truth: box 1 = (12, 12, 20, 20), class 1, exactly the stride-4 anchor of size 8 and
ratio 1 centred at (16, 16); box 2 = (33, 17, 49, 35), class 3, whose best anchor is the
stride-8 anchor of size 16 centred at (40, 24), (32, 16, 48, 32), with IoU
225 / 319 = 0.705. Masks fill the boxes. Expected values are computed by hand in the
comments and, for whole arrays, by plain-numpy references written from the definitions.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.models.roi_heads import (
    RoITargets,
    box_head_losses,
    detections,
    mask_loss_sum,
    mask_training_targets,
    roi_targets,
    select_class_channel,
)
from jaxseg.models.rpn import propose, rpn_targets

SIZE = 64
ANCHOR_SIZES = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
GT_BOXES = np.array([[12, 12, 20, 20], [33, 17, 49, 35], [0, 0, 0, 0]], np.float32)
GT_LABELS = np.array([1, 3, 0], np.int32)
GT_VALID = GT_LABELS > 0
# Anchor indices: level offset + (row * columns + column) * 3 + ratio index (0.5, 1, 2).
ANCHOR_BOX1 = (4 * 16 + 4) * 3 + 1            # P2, centre (16, 16), ratio 1
P3_OFFSET = 16 * 16 * 3
ANCHOR_BOX2 = P3_OFFSET + (3 * 8 + 5) * 3 + 1  # P3, centre (40, 24), ratio 1
ANCHOR_TALL = ANCHOR_BOX2 + 1                  # P3, centre (40, 24), ratio 2
ANCHOR_CORNER = 1                              # P2, centre (0, 0), ratio 1


def _anchors():
    return MaskRCNN(anchor_sizes=ANCHOR_SIZES).anchor_generator()(SIZE, SIZE)


def _masks():
    masks = np.zeros((3, SIZE, SIZE), np.uint8)
    for slot, (x1, y1, x2, y2) in enumerate(GT_BOXES.astype(int)):
        masks[slot, y1:y2, x1:x2] = 1
    return masks


def _numpy_iou(a, b):
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = lambda boxes: (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inter = ix * iy
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _numpy_rpn_labels(anchors):
    """detectron2's anchor labels from the definition: 1 / 0 / -1 (ignored)."""
    iou = _numpy_iou(GT_BOXES[GT_VALID].astype(np.float64), anchors.astype(np.float64))
    best = iou.max(axis=0)
    labels = np.where(best >= 0.7, 1, np.where(best < 0.3, 0, -1))
    for row in iou:
        labels[row == row.max()] = 1
    return labels


def test_rpn_anchor_labels_and_regression_targets():
    anchors = _anchors()
    np.testing.assert_array_equal(anchors[ANCHOR_BOX1], [12, 12, 20, 20])
    np.testing.assert_array_equal(anchors[ANCHOR_BOX2], [32, 16, 48, 32])
    num_anchors = len(anchors)
    # Sampling every anchor: all positives and negatives appear, ignored anchors never.
    targets = jax.jit(lambda key: rpn_targets(
        anchors, jnp.asarray(GT_BOXES), jnp.asarray(GT_VALID), key, batch_size=num_anchors,
        positive_fraction=0.5, fg_iou_threshold=0.7, bg_iou_threshold=0.3))(jax.random.key(0))
    indices, labels, box_targets = (np.asarray(x) for x in targets)
    full_labels = np.full(num_anchors, -1)
    full_labels[indices[labels >= 0]] = labels[labels >= 0]
    np.testing.assert_array_equal(full_labels, _numpy_rpn_labels(anchors))

    by_anchor = {int(i): (int(l), t) for i, l, t in zip(indices, labels, box_targets) if l >= 0}
    assert by_anchor[ANCHOR_BOX1][0] == 1
    np.testing.assert_allclose(by_anchor[ANCHOR_BOX1][1], [0, 0, 0, 0], atol=1e-6)
    # Box 2 has centre (41, 26), size 16 x 18; the anchor centre (40, 24), size 16 x 16:
    # (1 / 16, 2 / 16, log(16 / 16), log(18 / 16)) with unit weights.
    assert by_anchor[ANCHOR_BOX2][0] == 1
    np.testing.assert_allclose(by_anchor[ANCHOR_BOX2][1], [0.0625, 0.125, 0.0, math.log(18 / 16)], atol=1e-6)
    assert by_anchor[ANCHOR_CORNER][0] == 0
    # The tall anchor (w 11.31, h 22.63) overlaps box 2 with IoU 203.6 / 340.4 = 0.598: ignored.
    assert ANCHOR_TALL not in by_anchor


# Proposals: p0 overlaps box 1 with IoU 48 / 80 = 0.6 (foreground, class 1); p1 is far
# from both (background); p2 overlaps box 2 with IoU 144 / 288 = 0.5 exactly (foreground,
# class 3); p3 with IoU 128 / 288 = 0.444 (background); p4 is invalid padding.
PROPOSALS = np.array([[14, 12, 22, 20], [40, 40, 60, 60], [33, 17, 49, 26], [33, 17, 49, 25], [12, 12, 20, 20]],
                     np.float32)
PROPOSAL_VALID = np.array([True, True, True, True, False])


def _sampled_rois(batch_size=8, positive_fraction=0.5):
    return jax.jit(lambda key: roi_targets(
        jnp.asarray(PROPOSALS), jnp.asarray(PROPOSAL_VALID), jnp.asarray(GT_BOXES), jnp.asarray(GT_LABELS),
        jnp.asarray(GT_VALID), key, batch_size=batch_size, positive_fraction=positive_fraction,
        iou_threshold=0.5))(jax.random.key(1))


def test_roi_targets_append_ground_truth_and_match_at_half_iou():
    rois = _sampled_rois()
    boxes, valid, classes, box_targets = (np.asarray(x) for x in (rois.boxes, rois.valid, rois.classes,
                                                                   rois.box_targets))
    np.testing.assert_array_equal(valid, [True] * 6 + [False] * 2)
    # Expected (class, deltas with weights (10, 10, 5, 5)) of every valid candidate, by box:
    # p0: centre 18 vs 16, same size -> dx = 10 * -2 / 8; p2: centre y 21.5 vs 26, height 9 vs 18
    # -> dy = 10 * 4.5 / 9, dh = 5 * log 2; the ground-truth boxes themselves give zeros.
    expected = {
        (14, 12, 22, 20): (1, [-2.5, 0, 0, 0]),
        (33, 17, 49, 26): (3, [0, 5.0, 0, 5 * math.log(2)]),
        (12, 12, 20, 20): (1, [0, 0, 0, 0]),
        (33, 17, 49, 35): (3, [0, 0, 0, 0]),
        (40, 40, 60, 60): (0, None),
        (33, 17, 49, 25): (0, None),
    }
    seen = set()
    for slot in range(6):
        key = tuple(int(v) for v in boxes[slot])
        expected_class, expected_deltas = expected[key]
        assert classes[slot] == expected_class, key
        assert (slot < 4) == (expected_class > 0), "foreground RoIs come first"
        if expected_deltas is not None:
            np.testing.assert_allclose(box_targets[slot], expected_deltas, atol=1e-5)
        seen.add(key)
    assert len(seen) == 6


def test_roi_sampling_caps_foreground():
    rois = _sampled_rois(batch_size=4, positive_fraction=0.25)
    classes, valid = np.asarray(rois.classes), np.asarray(rois.valid)
    # One foreground slot allowed, the two background candidates fill in, one slot stays empty.
    np.testing.assert_array_equal(valid, [True, True, True, False])
    assert classes[0] > 0 and np.all(classes[1:3] == 0)


def _numpy_axis_profile(start, end, mask_start, mask_end, length, bins=28, samples=2):
    """Per-bin average of bilinear reads of a 0/1 interval indicator, as RoI Align (aligned) defines it."""
    indicator = lambda k: float(mask_start <= k < mask_end)
    bin_size = (end - start) / bins
    profile = np.zeros(bins)
    for i in range(bins):
        for s in range(samples):
            u = start + (i + (s + 0.5) / samples) * bin_size - 0.5
            if u < -1 or u > length:
                continue
            u = min(max(u, 0.0), length - 1)
            low = math.floor(u)
            frac = u - low
            profile[i] += ((1 - frac) * indicator(low) + frac * indicator(min(low + 1, length - 1))) / samples
    return profile


def test_mask_targets_of_foreground_rois():
    rois = _sampled_rois()
    boxes, classes, targets, foreground = jax.jit(lambda r, m: mask_training_targets(r, m, 4, 28))(
        rois, jnp.asarray(_masks()))
    boxes, classes, targets = np.asarray(boxes), np.asarray(classes), np.asarray(targets)
    assert np.all(np.asarray(foreground))
    for box, label, target in zip(boxes, classes, targets):
        gt = GT_BOXES[0] if label == 1 else GT_BOXES[1]
        rows = _numpy_axis_profile(box[1], box[3], gt[1], gt[3], SIZE)
        cols = _numpy_axis_profile(box[0], box[2], gt[0], gt[2], SIZE)
        np.testing.assert_array_equal(target, (np.outer(rows, cols) >= 0.5).astype(np.float32))
        np.testing.assert_array_equal(target, HAND_MASK_TARGETS[tuple(int(v) for v in box)])


def _ones_except(cells, columns=28):
    target = np.zeros((28, 28), np.float32)
    target[:, :columns] = 1.0
    for cell in cells:
        target[cell] = 0.0
    return target


# The 2 samples of an edge bin lie (k + 0.25) and (k + 0.75) bin widths into the RoI and
# read the mask bilinearly at (x - 0.5): with 8-pixel RoIs (bins of 2/7 px) an edge bin that
# starts on the mask's edge reads (0.571 + 0.714) / 2 = 0.643 of it, and a corner
# 0.643^2 = 0.41 < 0.5. With box 2 (bins of 4/7 x 9/14 px) the edge bins read 0.786 and
# 0.821 and p2's top edge (bins of 9/28 px) reads 0.661: corners stay >= 0.52, all ones.
# p0 (14, 12, 22, 20) passes box 1's right edge x = 20: bins 0..20 hold mask (bin 20 reads
# 0.643 along x, so it is 0 in the top and bottom rows), bins 21..27 do not.
CORNERS = [(0, 0), (0, 27), (27, 0), (27, 27)]
HAND_MASK_TARGETS = {
    (12, 12, 20, 20): _ones_except(CORNERS),
    (33, 17, 49, 35): _ones_except([]),
    (33, 17, 49, 26): _ones_except([]),
    (14, 12, 22, 20): _ones_except([(0, 20), (27, 20)], columns=21),
}


def test_proposals_decode_clip_and_suppress_duplicates():
    anchors = _anchors()
    num_anchors = len(anchors)
    counts = MaskRCNN(anchor_sizes=ANCHOR_SIZES).anchor_generator().num_anchors_per_level(SIZE, SIZE)
    objectness = -10.0 - np.linspace(0, 1, num_anchors)
    deltas = np.zeros((num_anchors, 4), np.float32)
    shifted = ANCHOR_BOX1 + 3  # the next column: centre (20, 16); dx = -0.5 moves it onto box 1
    corner_level_p3 = P3_OFFSET + 1  # centre (0, 0) on P3, size 16: clipped to (0, 0, 8, 8)
    objectness[[ANCHOR_BOX1, shifted, corner_level_p3]] = [10.0, 9.0, 8.0]
    deltas[shifted, 0] = -0.5
    proposals, valid = jax.jit(lambda o, d: propose(
        o, d, anchors, counts, (SIZE, SIZE), pre_nms_topk=50, post_nms_topk=20, nms_threshold=0.7))(
        jnp.asarray(objectness, jnp.float32), jnp.asarray(deltas))
    proposals, valid = np.asarray(proposals), np.asarray(valid)
    assert np.all(valid)
    np.testing.assert_allclose(proposals[0], [12, 12, 20, 20])
    np.testing.assert_allclose(proposals[1], [0, 0, 8, 8])
    assert np.sum(np.all(np.isclose(proposals, [12, 12, 20, 20]), axis=1)) == 1


def test_detections_score_decode_and_class_aware_nms():
    proposals = jnp.asarray([[10, 10, 30, 30], [11, 10, 31, 30], [40, 40, 60, 60], [0, 0, 0, 0]], jnp.float32)
    valid = jnp.asarray([True, True, True, False])
    logits = np.full((4, 4), -10.0, np.float32)
    logits[0, 1] = 5.0    # class 1, score ~1
    logits[1, 1] = 4.0    # class 1 again on an overlapping box: suppressed
    logits[1, 2] = 4.0    # class 2 on the same box: kept (class-aware NMS)
    logits[2, 0] = 5.0    # background: below the score threshold
    logits[3, 3] = 9.0    # invalid proposal: never detected
    deltas = np.zeros((4, 3, 4), np.float32)
    deltas[0, 0] = [10 * 0.25, 0, 0, 0]  # class 1 box of proposal 0 moves right by 5 px
    boxes, scores, classes, kept = jax.jit(lambda l, d: detections(
        l, d, proposals, valid, (64, 64), score_threshold=0.05, nms_threshold=0.5, max_detections=5))(
        jnp.asarray(logits), jnp.asarray(deltas))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(np.asarray(kept), [True, True, False, False, False])
    np.testing.assert_array_equal(np.asarray(classes)[:2], [1, 2])
    np.testing.assert_allclose(np.asarray(scores)[:2], [softmax[0, 1], softmax[1, 2]], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(boxes)[:2], [[15, 10, 35, 30], [11, 10, 31, 30]], atol=1e-5)


def _numpy_bce(logits, targets):
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    return -(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities))


def test_mask_loss_uses_only_foreground_rois_and_their_class_channel():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 2, 3)).astype(np.float32)
    targets = rng.integers(0, 2, size=(3, 2, 2)).astype(np.float32)
    classes = np.array([3, 1, 2], np.int32)
    foreground = np.array([True, True, False])
    selected = select_class_channel(jnp.asarray(logits), jnp.asarray(classes))
    expected_selected = np.stack([logits[0, ..., 2], logits[1, ..., 0], logits[2, ..., 1]])
    np.testing.assert_array_equal(np.asarray(selected), expected_selected)
    total = mask_loss_sum(selected, jnp.asarray(targets), jnp.asarray(foreground))
    expected = _numpy_bce(logits[0, ..., 2], targets[0]).sum() + _numpy_bce(logits[1, ..., 0], targets[1]).sum()
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_box_head_losses_cross_entropy_and_class_specific_l1():
    rng = np.random.default_rng(1)
    class_logits = rng.normal(size=(4, 4)).astype(np.float32)
    deltas = rng.normal(size=(4, 3, 4)).astype(np.float32)
    box_targets = rng.normal(size=(4, 4)).astype(np.float32)
    classes = np.array([2, 0, 3, 1], np.int32)
    valid = np.array([True, True, True, False])
    targets = RoITargets(jnp.zeros((4, 4)), jnp.asarray(valid), jnp.asarray(classes), jnp.zeros(4, jnp.int32),
                         jnp.asarray(box_targets))
    classification, regression = box_head_losses(jnp.asarray(class_logits), jnp.asarray(deltas), targets, beta=0.0)
    log_softmax = class_logits - np.log(np.exp(class_logits).sum(axis=1, keepdims=True))
    expected_ce = -(log_softmax[0, 2] + log_softmax[1, 0] + log_softmax[2, 3])
    # Foreground and valid: RoI 0 (class 2 -> channel 1) and RoI 2 (class 3 -> channel 2).
    expected_l1 = np.abs(deltas[0, 1] - box_targets[0]).sum() + np.abs(deltas[2, 2] - box_targets[2]).sum()
    np.testing.assert_allclose(float(classification), expected_ce, rtol=1e-5)
    np.testing.assert_allclose(float(regression), expected_l1, rtol=1e-5)
