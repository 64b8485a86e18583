import functools

import jax
import numpy as np
import pytest

from jaxseg.ops import box_iou, match, match_boxes


def reference_match(iou, gt_valid, high, low, allow_low_quality):
    """The matcher by loops over anchors and ground truth."""
    num_gt, num_anchors = iou.shape
    matched = np.zeros(num_anchors, np.int32)
    labels = np.zeros(num_anchors, np.int32)
    valid_gt = [g for g in range(num_gt) if gt_valid[g]]
    for a in range(num_anchors):
        if not valid_gt:
            continue
        best = max(valid_gt, key=lambda g: (iou[g, a], -g))
        matched[a] = best
        labels[a] = 1 if iou[best, a] >= high else (0 if iou[best, a] < low else -1)
    if allow_low_quality:
        for g in valid_gt:
            best_iou = iou[g].max()
            for a in range(num_anchors):
                if best_iou > 0 and iou[g, a] == best_iou:
                    labels[a] = 1
    return matched, labels


def test_hand_built_thresholds_ties_and_low_quality():
    iou = np.array(
        [
            [0.80, 0.50, 0.10, 0.00, 0.35, 0.35],
            [0.60, 0.65, 0.20, 0.00, 0.10, 0.00],
        ],
        np.float32,
    )
    matched, labels = match(iou, high_threshold=0.7, low_threshold=0.3)
    np.testing.assert_array_equal(matched, [0, 1, 1, 0, 0, 0])
    # Anchor 1 (0.65) is the best of ground truth 1; anchors 4, 5 are not any gt's best.
    np.testing.assert_array_equal(labels, [1, 1, 0, 0, -1, -1])
    _, strict = match(iou, high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=False)
    np.testing.assert_array_equal(strict, [1, -1, 0, 0, -1, -1])
    # All anchors tied for a ground truth's best IoU become positive, keeping their argmax.
    tied = np.array([[0.4, 0.1, 0.4], [0.5, 0.0, 0.0]], np.float32)
    matched, labels = match(tied, high_threshold=0.7, low_threshold=0.3)
    np.testing.assert_array_equal(labels, [1, 0, 1])
    np.testing.assert_array_equal(matched, [1, 0, 0])


def test_padding_never_matches_and_all_padding_gives_negatives():
    iou = np.array([[0.2, 0.9], [0.95, 0.0]], np.float32)
    matched, labels = match(iou, np.array([True, False]))
    np.testing.assert_array_equal(matched, [0, 0])
    np.testing.assert_array_equal(labels, [0, 1])
    matched, labels = match(iou, np.array([False, False]))
    np.testing.assert_array_equal(matched, [0, 0])
    np.testing.assert_array_equal(labels, [0, 0])
    matched, labels = match(np.zeros((0, 3)))
    assert matched.shape == labels.shape == (3,) and not labels.any() and not matched.any()
    matched, labels = match(np.zeros((2, 0)), np.array([True, False]))
    assert matched.shape == labels.shape == (0,)


def test_ground_truth_without_overlap_promotes_nothing():
    _, labels = match(np.array([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]], np.float32))
    np.testing.assert_array_equal(labels, [1, 0, 0])


@pytest.mark.parametrize("allow_low_quality", [True, False])
def test_random_boxes_match_loop_reference(allow_low_quality):
    rng = np.random.default_rng(int(allow_low_quality))
    corner = rng.uniform(0, 100, (60, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(8, 40, (60, 2))], axis=1).astype(np.float32)
    gt = anchors[rng.choice(60, 7)] + rng.normal(0, 1, (7, 4)).astype(np.float32)
    gt[5:] = 0.0  # padding
    gt_valid = np.array([True] * 5 + [False] * 2)
    matched, labels = jax.jit(functools.partial(match_boxes, allow_low_quality_matches=allow_low_quality))(
        gt, anchors, gt_valid
    )
    iou = np.asarray(box_iou(gt, anchors))
    expected_matched, expected_labels = reference_match(iou, gt_valid, 0.7, 0.3, allow_low_quality)
    assert matched.dtype == labels.dtype == np.int32
    np.testing.assert_array_equal(matched, expected_matched)
    np.testing.assert_array_equal(labels, expected_labels)
    assert {0, 1} <= set(np.asarray(labels).tolist())


def test_vmap_over_images_agrees_with_unbatched():
    rng = np.random.default_rng(5)
    iou = rng.uniform(0, 1, (3, 4, 20)).astype(np.float32) ** 3
    gt_valid = np.array([[True, True, False, False], [False] * 4, [True] * 4])
    batched = jax.jit(jax.vmap(functools.partial(match, high_threshold=0.5, low_threshold=0.4)))(iou, gt_valid)
    for i in range(3):
        single = match(iou[i], gt_valid[i], high_threshold=0.5, low_threshold=0.4)
        expected = reference_match(iou[i], gt_valid[i], 0.5, 0.4, True)
        for got, one, ref in zip(batched, single, expected):
            np.testing.assert_array_equal(got[i], one)
            np.testing.assert_array_equal(got[i], ref)


def test_match_rejects_bad_arguments():
    with pytest.raises(ValueError, match="iou must have shape"):
        match(np.zeros((3,)))
    with pytest.raises(ValueError, match="low_threshold"):
        match(np.zeros((2, 3)), high_threshold=0.3, low_threshold=0.7)
    with pytest.raises(ValueError, match="gt_valid"):
        match(np.zeros((2, 3)), np.ones((3,), bool))
