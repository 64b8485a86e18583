"""Mask targets and mask pasting against plain-numpy loop references."""
import math

import jax
import numpy as np
import pytest

from jaxseg.ops.mask_targets import mask_targets, paste_masks
from test_roi_align import roi_align_reference


def mask_targets_reference(gt_masks, matched, rois, size, binarize):
    """Crop each RoI's (clipped) matched mask with the RoI Align loop reference."""
    crops = []
    for index, roi in zip(np.clip(matched, 0, len(gt_masks) - 1), rois):
        crop = roi_align_reference(gt_masks[index][..., None], roi[None], (size, size), 1.0, 2, True)
        crops.append(crop[0, ..., 0])
    crops = np.stack(crops)
    return (crops >= 0.5).astype(np.float32) if binarize else crops


def paste_reference(mask, box, height, width):
    """Each pixel centre read from the box's M x M grid, bilinear with zero padding."""
    size = mask.shape[0]
    x1, y1, x2, y2 = box
    image = np.zeros((height, width))
    for y in range(height):
        v = (y + 0.5 - y1) / (y2 - y1) * size - 0.5
        for x in range(width):
            u = (x + 0.5 - x1) / (x2 - x1) * size - 0.5
            for row in (math.floor(v), math.floor(v) + 1):
                for col in (math.floor(u), math.floor(u) + 1):
                    if 0 <= row < size and 0 <= col < size:
                        image[y, x] += (1 - abs(v - row)) * (1 - abs(u - col)) * mask[row, col]
    return image


@pytest.fixture(scope="module")
def gt_masks():
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(3, 20, 24)) > 0.4).astype(np.uint8)


ROIS = np.array([[2.0, 3.0, 15.0, 17.0], [-5.0, -4.0, 10.0, 8.0], [18.0, 12.0, 30.0, 25.0],
                 [40.0, 40.0, 50.0, 50.0], [6.0, 6.0, 6.5, 7.0], [0.0, 0.0, 24.0, 20.0]], np.float32)
MATCHED = np.array([0, 1, 2, 1, 5, -1], np.int32)


@pytest.mark.parametrize("binarize", [False, True])
def test_mask_targets_match_reference(gt_masks, binarize):
    got = mask_targets(gt_masks, MATCHED, ROIS, 6, binarize=binarize)
    want = mask_targets_reference(gt_masks, MATCHED, ROIS, 6, binarize)
    assert got.shape == (6, 6, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    if binarize:
        assert set(np.unique(got)) == {0.0, 1.0}


def test_mask_targets_hand_built():
    masks = np.zeros((2, 10, 10), bool)
    masks[1, 2:8, 2:8] = True
    rois = np.array([[3.0, 3.0, 7.0, 7.0], [3.0, 3.0, 7.0, 7.0], [20.0, 20.0, 30.0, 30.0]])
    got = mask_targets(masks, np.array([1, 0, 1]), rois, 4)
    np.testing.assert_array_equal(got[0], 1.0)
    np.testing.assert_array_equal(got[1:], 0.0)


def test_mask_targets_empty_inputs(gt_masks):
    assert mask_targets(gt_masks, np.zeros((0,), np.int32), np.zeros((0, 4)), 28).shape == (0, 28, 28)
    no_gt = mask_targets(np.zeros((0, 20, 24)), MATCHED, ROIS, 5)
    np.testing.assert_array_equal(no_gt, np.zeros((6, 5, 5)))


def test_mask_targets_jit_and_vmap(gt_masks):
    want = mask_targets(gt_masks, MATCHED, ROIS, 5)
    jitted = jax.jit(lambda m, i, r: mask_targets(m, i, r, 5))(gt_masks, MATCHED, ROIS)
    np.testing.assert_array_equal(jitted, want)
    batched = jax.vmap(lambda m, i, r: mask_targets(m, i, r, 5))(
        np.stack([gt_masks, 1 - gt_masks]), np.stack([MATCHED, MATCHED]), np.stack([ROIS, ROIS]))
    np.testing.assert_array_equal(batched[0], want)
    np.testing.assert_array_equal(batched[1], mask_targets(1 - gt_masks, MATCHED, ROIS, 5))


def test_mask_targets_reject_bad_shapes(gt_masks):
    with pytest.raises(ValueError, match="gt_masks"):
        mask_targets(gt_masks[0], MATCHED, ROIS)
    with pytest.raises(ValueError, match="matched_gt_index"):
        mask_targets(gt_masks, MATCHED[:3], ROIS)
    with pytest.raises(ValueError, match="mask_size"):
        mask_targets(gt_masks, MATCHED, ROIS, 0)
    with pytest.raises(ValueError, match="boxes"):
        mask_targets(gt_masks, MATCHED, ROIS[:, :2])


def test_paste_masks_match_reference():
    rng = np.random.default_rng(1)
    masks = rng.uniform(size=(4, 5, 5)).astype(np.float32)
    boxes = np.array([[3.0, 2.0, 12.5, 9.0], [-4.0, -3.0, 6.0, 5.0], [10.0, 1.0, 20.0, 14.0],
                      [1.2, 7.7, 2.9, 8.1]], np.float32)
    got = paste_masks(masks, boxes, 11, 15)
    assert got.shape == (4, 11, 15)
    for k in range(4):
        np.testing.assert_allclose(got[k], paste_reference(masks[k], boxes[k], 11, 15), atol=1e-5)


def test_paste_masks_hand_built():
    got = paste_masks(np.ones((2, 4, 4)), np.array([[2.0, 2.0, 6.0, 6.0], [3.0, 3.0, 3.0, 5.0]]), 8, 8)
    want = np.zeros((8, 8))
    want[2:6, 2:6] = 1.0
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    np.testing.assert_array_equal(got[1], 0.0)


def test_paste_masks_jit_vmap_and_empty():
    rng = np.random.default_rng(2)
    masks = rng.uniform(size=(2, 3, 3, 3)).astype(np.float32)
    boxes = np.array([[[1.0, 1.0, 5.0, 4.0], [0.0, 2.0, 3.0, 6.0], [2.0, 0.0, 6.0, 6.0]]] * 2, np.float32)
    batched = jax.jit(jax.vmap(lambda m, b: paste_masks(m, b, 6, 7)))(masks, boxes)
    np.testing.assert_allclose(batched[1], paste_masks(masks[1], boxes[1], 6, 7), atol=1e-6)
    assert paste_masks(np.zeros((0, 3, 3)), np.zeros((0, 4)), 6, 7).shape == (0, 6, 7)
    with pytest.raises(ValueError, match="image_height"):
        paste_masks(masks[0], boxes[0], 0, 7)
    with pytest.raises(ValueError, match="mask_probs"):
        paste_masks(masks[0, :, :2], boxes[0], 6, 7)
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(masks[0], boxes[0, :2], 6, 7)


def test_paste_masks_matches_grid_sample_when_installed():
    torch = pytest.importorskip("torch")
    masks = np.random.default_rng(3).uniform(size=(2, 4, 4)).astype(np.float32)
    boxes = np.array([[1.0, 2.0, 7.5, 6.0], [-2.0, 0.5, 4.0, 9.0]], np.float32)
    ys, xs = np.arange(9) + 0.5, np.arange(10) + 0.5
    grids = []
    for x1, y1, x2, y2 in boxes:
        gy = (ys - y1) / (y2 - y1) * 2 - 1
        gx = (xs - x1) / (x2 - x1) * 2 - 1
        grids.append(np.stack(np.broadcast_arrays(gx[None, :], gy[:, None]), -1))
    want = torch.nn.functional.grid_sample(
        torch.from_numpy(masks[:, None]), torch.from_numpy(np.stack(grids).astype(np.float32)),
        align_corners=False)
    np.testing.assert_allclose(paste_masks(masks, boxes, 9, 10), want.numpy()[:, 0], atol=1e-5)
