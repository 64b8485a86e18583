"""RoI Align / RoI Pool / multi-level RoI Align against plain-numpy loop references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.ops.roi_align import fpn_levels, multilevel_roi_align, roi_align
from jaxseg.ops.roi_pool import roi_pool


def _bilinear(features, y, x):
    """The reference kernel's bilinear read of `features [H, W, C]` at (y, x)."""
    height, width, _ = features.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(features.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return ((1 - ly) * (1 - lx) * features[y_low, x_low] + (1 - ly) * lx * features[y_low, x_high]
            + ly * (1 - lx) * features[y_high, x_low] + ly * lx * features[y_high, x_high])


def roi_align_reference(features, boxes, output_hw, scale, samples, aligned):
    """Loop over boxes, bins and samples, as the Mask R-CNN definition reads."""
    features = np.asarray(features, np.float64)
    out_h, out_w = output_hw
    result = np.zeros((len(boxes), out_h, out_w, features.shape[2]))
    offset = 0.5 if aligned else 0.0
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        start_x, start_y = x1 * scale - offset, y1 * scale - offset
        roi_w, roi_h = x2 * scale - offset - start_x, y2 * scale - offset - start_y
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        for py in range(out_h):
            for px in range(out_w):
                total = 0.0
                for iy in range(samples):
                    y = start_y + py * bin_h + (iy + 0.5) * bin_h / samples
                    for ix in range(samples):
                        x = start_x + px * bin_w + (ix + 0.5) * bin_w / samples
                        total = total + _bilinear(features, y, x)
                result[k, py, px] = total / samples ** 2
    return result


def _c_round(value):
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def roi_pool_reference(features, boxes, output_hw, scale):
    """Fast R-CNN RoI max pooling loop; returns values and flat `y * W + x` argmax (-1 if empty)."""
    features = np.asarray(features, np.float64)
    height, width, channels = features.shape
    out_h, out_w = output_hw
    values = np.zeros((len(boxes), out_h, out_w, channels))
    argmax = -np.ones(values.shape, int)
    for k, box in enumerate(np.asarray(boxes, np.float32)):
        x1, y1, x2, y2 = (_c_round(float(np.float32(c) * np.float32(scale))) for c in box)
        bin_h = np.float32(max(y2 - y1 + 1, 1)) / np.float32(out_h)
        bin_w = np.float32(max(x2 - x1 + 1, 1)) / np.float32(out_w)
        for py in range(out_h):
            y_lo = min(max(math.floor(py * bin_h) + y1, 0), height)
            y_hi = min(max(math.ceil((py + 1) * bin_h) + y1, 0), height)
            for px in range(out_w):
                x_lo = min(max(math.floor(px * bin_w) + x1, 0), width)
                x_hi = min(max(math.ceil((px + 1) * bin_w) + x1, 0), width)
                for c in range(channels):
                    best = -np.inf
                    for y in range(y_lo, y_hi):
                        for x in range(x_lo, x_hi):
                            if features[y, x, c] > best:
                                best, argmax[k, py, px, c] = features[y, x, c], y * width + x
                    values[k, py, px, c] = best if argmax[k, py, px, c] >= 0 else 0.0
    return values, argmax


# Boxes in image pixels for a 9x11 map at scale 1/4 (a 36x44 image): inside, partly
# outside on each side, fully outside, tiny, huge, zero-size, reversed and a point.
BOXES = np.array([
    [4.0, 6.0, 30.0, 22.0],
    [-10.0, -6.0, 9.0, 11.0],
    [30.0, 20.0, 60.0, 50.0],
    [100.0, 100.0, 130.0, 140.0],
    [-50.0, -50.0, -30.0, -40.0],
    [13.0, 17.0, 13.4, 17.2],
    [-200.0, -150.0, 300.0, 260.0],
    [8.0, 8.0, 8.0, 8.0],
    [20.0, 10.0, 12.0, 4.0],
    [43.0, 35.0, 44.0, 36.0],
], np.float32)


@pytest.fixture(scope="module")
def features():
    return np.random.default_rng(0).standard_normal((9, 11, 3)).astype(np.float32)


@pytest.mark.parametrize("method", ["gather", "einsum"])
@pytest.mark.parametrize("samples", [1, 2, 4])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_reference(features, method, samples, aligned):
    got = roi_align(features, BOXES, (3, 5), 0.25, samples, aligned, method=method)
    want = roi_align_reference(features, BOXES, (3, 5), 0.25, samples, aligned)
    assert got.shape == (len(BOXES), 3, 5, 3)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_roi_align_random_boxes_scale_one(features):
    rng = np.random.default_rng(1)
    corners = rng.uniform(-4, 14, (12, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1).astype(np.float32)
    for aligned in (True, False):
        got = roi_align(features, boxes, 4, 1.0, 2, aligned)
        np.testing.assert_allclose(got, roi_align_reference(features, boxes, (4, 4), 1.0, 2, aligned),
                                   atol=2e-6)


def test_roi_align_hand_computed_on_a_ramp():
    ys, xs = np.mgrid[0:6, 0:6].astype(np.float32)
    ramp = (10 * ys + xs)[..., None]
    # aligned: the box spans [0.5, 4.5] in both axes, bin centres at 1.5 and 3.5, and
    # bilinear reads of a linear map are exact.
    got = roi_align(ramp, np.array([[1.0, 1.0, 5.0, 5.0]]), 2, 1.0, 2, True)
    np.testing.assert_allclose(got[0, ..., 0], [[16.5, 18.5], [36.5, 38.5]], atol=1e-5)
    # a box far outside reads zero; a sample at y = -0.5 clamps to row 0.
    far = roi_align(ramp, np.array([[20.0, 20.0, 30.0, 30.0]]), 2, 1.0, 2, True)
    np.testing.assert_array_equal(far, 0.0)
    edge = roi_align(ramp, np.array([[0.0, -1.0, 1.0, 1.0]]), 1, 1.0, 1, False)
    np.testing.assert_allclose(edge[0, 0, 0, 0], 0.5, atol=1e-6)


def test_roi_align_empty_boxes(features):
    for method in ("gather", "einsum"):
        assert roi_align(features, np.zeros((0, 4)), 7, method=method).shape == (0, 7, 7, 3)
    assert roi_pool(features, np.zeros((0, 4)), 7).shape == (0, 7, 7, 3)
    pyramid = [features, features[::2, ::2]]
    assert multilevel_roi_align(pyramid, np.zeros((0, 4)), 7).shape == (0, 7, 7, 3)


def test_roi_align_steps_jit_and_vmap_agree(features):
    want = roi_align(features, BOXES, (2, 3), 0.25, 2, True, boxes_per_step=len(BOXES))
    stepped = roi_align(features, BOXES, (2, 3), 0.25, 2, True, boxes_per_step=3)  # 3 + 3 + 3 + 1
    np.testing.assert_allclose(stepped, want, atol=1e-6)
    jitted = jax.jit(lambda f, b: roi_align(f, b, (2, 3), 0.25))(features, BOXES)
    np.testing.assert_allclose(jitted, want, atol=1e-6)
    batch = np.stack([features, 2 * features])
    batched = jax.vmap(lambda f, b: roi_align(f, b, (2, 3), 0.25))(batch, np.stack([BOXES, BOXES]))
    np.testing.assert_allclose(batched[0], want, atol=1e-6)
    np.testing.assert_allclose(batched[1], 2 * want, atol=1e-5)


@pytest.mark.parametrize("method", ["gather", "einsum"])
def test_roi_align_gradient_matches_finite_differences(method):
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((5, 6, 2))
    boxes = np.array([[1.0, 2.0, 17.0, 13.0], [-6.0, 4.0, 9.0, 30.0], [10.0, 0.0, 30.0, 8.0]])
    cotangent = rng.standard_normal((3, 2, 3, 2))

    def loss(f):
        return jnp.sum(roi_align(f, boxes, (2, 3), 0.5, 2, True, method=method) * cotangent)

    grad = np.asarray(jax.jit(jax.grad(loss))(feats.astype(np.float32)))
    # RoI Align is linear in the features, so central differences of the float64
    # reference are exact up to rounding.
    numeric = np.zeros(feats.size)
    for i in range(feats.size):
        step = np.zeros(feats.size)
        step[i] = 0.5
        up = roi_align_reference(feats + step.reshape(feats.shape), boxes, (2, 3), 0.5, 2, True)
        down = roi_align_reference(feats - step.reshape(feats.shape), boxes, (2, 3), 0.5, 2, True)
        numeric[i] = np.sum((up - down) * cotangent)
    np.testing.assert_allclose(grad.ravel(), numeric, atol=1e-5)
    assert np.abs(numeric).max() > 0.1


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampling_ratio=0), "sampling_ratio"),
    (dict(sampling_ratio=-1), "sampling_ratio"),
    (dict(output_size=(0, 2)), "output_size"),
    (dict(output_size=(2, 2, 2)), "output_size"),
    (dict(output_size=7.0), "output_size"),
    (dict(method="bilinear"), "method"),
    (dict(boxes_per_step=0), "boxes_per_step"),
])
def test_roi_align_rejects_bad_arguments(features, kwargs, match):
    arguments = dict(output_size=2) | kwargs
    with pytest.raises(ValueError, match=match):
        roi_align(features, BOXES, **arguments)


def test_roi_align_rejects_bad_shapes(features):
    with pytest.raises(ValueError, match="features"):
        roi_align(features[0], BOXES, 2)
    with pytest.raises(ValueError, match="boxes"):
        roi_align(features, BOXES[:, :3], 2)
    with pytest.raises(ValueError, match="boxes"):
        roi_pool(features, BOXES[0], 2)
    with pytest.raises(ValueError, match="feature_pyramid"):
        multilevel_roi_align([], BOXES, 2)
    with pytest.raises(ValueError, match="channel"):
        multilevel_roi_align([features, features[..., :2]], BOXES, 2)


def test_roi_pool_matches_reference(features):
    # 2.5 * 1 rounds to 3 (half away from zero), not to 2; the 5th box makes empty bins.
    boxes = np.concatenate([BOXES, [[2.5, 1.5, 6.5, 3.5], [-2.5, -0.5, 1.5, 0.5]]]).astype(np.float32)
    for scale in (0.25, 1.0):
        want, _ = roi_pool_reference(features, boxes, (3, 5), scale)
        np.testing.assert_allclose(roi_pool(features, boxes, (3, 5), scale), want, atol=0)
    want, _ = roi_pool_reference(features, boxes, (3, 5), 0.25)
    assert np.any(want == 0.0)


def test_roi_pool_gradient_goes_to_first_maximum(features):
    boxes = np.concatenate([BOXES, [[0.0, 0.0, 4.0, 4.0]]]).astype(np.float32)
    feats = features.copy()
    feats[0:2, 0:2, 0] = 5.0  # a tie: the first maximum in row-major order wins
    _, argmax = roi_pool_reference(feats, boxes, (2, 3), 0.5)
    cotangent = np.random.default_rng(3).standard_normal(argmax.shape)
    want = np.zeros(feats.shape)
    for (k, py, px, c), index in np.ndenumerate(argmax):
        if index >= 0:
            want[index // feats.shape[1], index % feats.shape[1], c] += cotangent[k, py, px, c]
    got = jax.jit(jax.grad(lambda f: jnp.sum(roi_pool(f, boxes, (2, 3), 0.5) * cotangent)))(feats)
    np.testing.assert_allclose(got, want, atol=1e-6)
    tie = jax.grad(lambda f: roi_pool(f, np.array([[0.0, 0.0, 1.0, 1.0]]), 1)[0, 0, 0, 0])(feats)
    expected = np.zeros(feats.shape)
    expected[0, 0, 0] = 1.0
    np.testing.assert_array_equal(tie, expected)


def test_roi_pool_bin_edges_use_exact_division():
    # The RoI spans 25 columns in 7 bins: 7 * float32(25 / 7) is exactly 25, so the last
    # bin ends at column 25 (exclusive); a reciprocal multiply would give 25.000002 and
    # let the last bin take column 25 as well.
    feats = np.zeros((40, 40, 1), np.float32)
    feats[:, 25] = 1.0
    boxes = np.array([[0.0, 0.0, 96.0, 96.0]] * 3, np.float32)
    pooled = jax.vmap(lambda f: roi_pool(f, boxes, 7, 0.25))(np.stack([feats, feats]))
    np.testing.assert_array_equal(pooled, 0.0)


def test_roi_pool_vmap_over_batch(features):
    batched = jax.vmap(lambda f: roi_pool(f, BOXES, 2, 0.25))(np.stack([features, -features]))
    np.testing.assert_allclose(batched[1], roi_pool_reference(-features, BOXES, (2, 2), 0.25)[0])


def test_fpn_levels_hand_checked():
    sides = [224.0, 223.0, 112.0, 448.0, 447.0, 896.0, 10.0, 0.0]
    boxes = np.array([[5.0, 5.0, 5.0 + s, 5.0 + s] for s in sides] + [[10.0, 10.0, 0.0, 0.0]])
    np.testing.assert_array_equal(fpn_levels(boxes, 2, 5), [4, 3, 3, 5, 4, 5, 2, 2, 2])
    np.testing.assert_array_equal(fpn_levels(boxes, 3, 7), [4, 3, 3, 5, 4, 6, 3, 3, 3])


@pytest.mark.parametrize("method", ["gather", "einsum"])
def test_multilevel_roi_align_uses_each_box_level(method):
    rng = np.random.default_rng(4)
    pyramid = [rng.standard_normal((64 // 2 ** i, 48 // 2 ** i, 2)).astype(np.float32)
               for i in range(3)]  # levels 2, 3, 4 of a 256x192 image
    boxes = np.array([[10.0, 20.0, 40.0, 50.0], [0.0, 0.0, 150.0, 120.0],
                      [10.0, 0.0, 260.0, 230.0], [-20.0, 100.0, 300.0, 300.0]], np.float32)
    levels = np.asarray(fpn_levels(boxes, 2, 4))
    np.testing.assert_array_equal(levels, [2, 3, 4, 4])
    got = multilevel_roi_align(pyramid, boxes, (3, 2), 2, True, method=method)
    for k, level in enumerate(levels):
        want = roi_align_reference(pyramid[level - 2], boxes[k:k + 1], (3, 2), 2.0 ** -level, 2, True)
        np.testing.assert_allclose(got[k:k + 1], want, atol=2e-6)
    jitted = jax.jit(lambda p, b: multilevel_roi_align(p, b, (3, 2), method=method))(pyramid, boxes)
    np.testing.assert_allclose(jitted, got, atol=1e-6)


def test_matches_torchvision_when_installed(features):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    torch_features = torch.from_numpy(np.ascontiguousarray(features.transpose(2, 0, 1)[None]))
    torch_boxes = torch.from_numpy(np.concatenate([np.zeros((len(BOXES), 1), np.float32), BOXES], 1))
    for aligned in (True, False):
        want = ops.roi_align(torch_features, torch_boxes, (3, 5), 0.25, 2, aligned)
        np.testing.assert_allclose(roi_align(features, BOXES, (3, 5), 0.25, 2, aligned),
                                   want.numpy().transpose(0, 2, 3, 1), atol=2e-6)
    want = ops.roi_pool(torch_features, torch_boxes, (3, 5), 0.25)
    np.testing.assert_allclose(roi_pool(features, BOXES, (3, 5), 0.25),
                               want.numpy().transpose(0, 2, 3, 1), atol=0)
