"""Losses against plain-numpy references written from their definitions, and hand cases."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import losses, registry

IGNORE = 255
SHAPES = [(2, 5, 7, 3), (1, 4, 4, 2), (3, 2, 6, 5)]


# ---------------------------------------------------------------- numpy references

def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_softmax_ce(logits, labels, ignore=IGNORE):
    log_probs = np_log_softmax(logits).reshape(-1, logits.shape[-1])
    total, count = 0.0, 0
    for pixel_log_probs, label in zip(log_probs, labels.ravel()):
        if label != ignore:
            total -= pixel_log_probs[label]
            count += 1
    return total / count if count else 0.0


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def np_bce(logits, targets):
    p = np_sigmoid(logits)
    return np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def np_focal(logits, labels, gamma, alpha_per_class, ignore=IGNORE):
    probs = np.exp(np_log_softmax(logits)).reshape(-1, logits.shape[-1])
    total, count = 0.0, 0
    for pixel_probs, label in zip(probs, labels.ravel()):
        if label != ignore:
            p_true = pixel_probs[label]
            total += -alpha_per_class[label] * (1 - p_true) ** gamma * np.log(p_true)
            count += 1
    return total / count if count else 0.0


def np_sigmoid_focal(logits, targets, gamma, alpha):
    p = np_sigmoid(logits)
    p_true = np.where(targets == 1, p, 1 - p)
    alpha_true = np.where(targets == 1, alpha, 1 - alpha)
    return np.mean(-alpha_true * (1 - p_true) ** gamma * np.log(p_true))


def np_seed_dice(logits, targets, smooth):
    p = np_sigmoid(logits)
    return 1 - (2 * np.sum(p * targets) + smooth) / (np.sum(p) + np.sum(targets) + smooth)


def np_multiclass_dice(logits, labels, smooth, include_background, ignore=IGNORE):
    num_classes = logits.shape[-1]
    probs = np.exp(np_log_softmax(logits)).reshape(-1, num_classes)
    flat_labels = labels.ravel()
    keep = flat_labels != ignore
    ratios = []
    for k in range(0 if include_background else 1, num_classes):
        p_k = probs[keep, k]
        y_k = (flat_labels[keep] == k).astype(np.float64)
        ratios.append((2 * np.sum(p_k * y_k) + smooth) / (np.sum(p_k) + np.sum(y_k) + smooth))
    return 1 - np.mean(ratios)


def random_case(shape, seed, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=shape).astype(np.float32)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    labels[rng.random(shape[:-1]) < ignore_fraction] = IGNORE
    return logits, labels


# ---------------------------------------------------------------- against references

@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_cross_entropy_matches_numpy(shape):
    logits, labels = random_case(shape, seed=1)
    assert (labels == IGNORE).any()
    got = losses.softmax_cross_entropy(logits, labels)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, np_softmax_ce(logits, labels), rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7), (3, 4), (10,)])
def test_sigmoid_bce_matches_numpy(shape):
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=shape).astype(np.float32)
    targets = (rng.random(shape) < 0.4).astype(np.float32)
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(logits, targets),
                               np_bce(logits, targets), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (0.5, 0.25), (1.0, "per_class")])
def test_focal_loss_matches_numpy(shape, gamma, alpha):
    logits, labels = random_case(shape, seed=3)
    num_classes = shape[-1]
    if alpha is None:
        alpha_per_class = np.ones(num_classes)
    elif alpha == "per_class":
        alpha = alpha_per_class = np.linspace(0.2, 1.5, num_classes)
    else:
        alpha_per_class = np.full(num_classes, alpha)
        alpha_per_class[0] = 1 - alpha
    got = losses.focal_loss(logits, labels, gamma=gamma, alpha=alpha)
    np.testing.assert_allclose(got, np_focal(logits, labels, gamma, alpha_per_class), rtol=1e-5)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, labels = random_case((2, 3, 4, 3), seed=4)
    np.testing.assert_allclose(losses.focal_loss(logits, labels, gamma=0.0),
                               np_softmax_ce(logits, labels), rtol=1e-5)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.9)])
def test_sigmoid_focal_loss_matches_numpy(gamma, alpha):
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=2.0, size=(2, 6, 5)).astype(np.float32)
    targets = (rng.random((2, 6, 5)) < 0.3).astype(np.float32)
    np.testing.assert_allclose(losses.sigmoid_focal_loss(logits, targets, gamma, alpha),
                               np_sigmoid_focal(logits, targets, gamma, alpha), rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 8), (1, 5, 3, 1), (4, 6)])
@pytest.mark.parametrize("smooth", [1.0, 0.0, 1e-5])
def test_dice_loss_equals_seed_formula(shape, smooth):
    rng = np.random.default_rng(6)
    logits = rng.normal(scale=2.0, size=shape).astype(np.float32)
    targets = (rng.random(shape) < 0.5).astype(np.float32)
    np.testing.assert_allclose(losses.dice_loss(logits, targets, smooth=smooth),
                               np_seed_dice(logits, targets, smooth), rtol=1e-5, atol=1e-7)


def test_dice_loss_per_image_is_one_minus_mean_of_per_image_ratios():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    targets = (rng.random((3, 4, 5)) < 0.5).astype(np.float32)
    per_image = [1 - np_seed_dice(logits[i], targets[i], 1.0) for i in range(3)]
    np.testing.assert_allclose(losses.dice_loss(logits, targets, per_image=True),
                               1 - np.mean(per_image), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("include_background", [True, False])
def test_multiclass_dice_matches_numpy(shape, include_background):
    logits, labels = random_case(shape, seed=8)
    got = losses.multiclass_dice_loss(logits, labels, smooth=1.0, include_background=include_background)
    np.testing.assert_allclose(got, np_multiclass_dice(logits, labels, 1.0, include_background), rtol=1e-5)


# ---------------------------------------------------------------- hand-computed cases

def test_cross_entropy_two_by_two_by_hand():
    ln3 = math.log(3.0)
    # softmax of (0, ln 3) is (1/4, 3/4); of (0, 0) is (1/2, 1/2).
    logits = np.array([[[[0, ln3], [0, ln3]], [[0, 0], [9, -9]]]], np.float32)
    labels = np.array([[[0, 1], [0, IGNORE]]])
    expected = (math.log(4) + math.log(4 / 3) + math.log(2)) / 3
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), expected, rtol=1e-6)


def test_dice_two_by_two_by_hand():
    ln3 = math.log(3.0)
    # sigmoid: ln3 -> 3/4, -ln3 -> 1/4, 0 -> 1/2.
    logits = np.array([[[ln3, -ln3], [0.0, 0.0]]], np.float32)
    targets = np.array([[[1, 0], [1, 0]]], np.float32)
    # sum(p*t) = 1.25, sum(p) = 2, sum(t) = 2: 1 - (2.5 + 1) / (4 + 1) = 0.3
    np.testing.assert_allclose(losses.dice_loss(logits, targets, smooth=1.0), 0.3, rtol=1e-6)


def test_multiclass_dice_by_hand_ignores_ignored_pixels():
    # Two valid pixels with p = (1/2, 1/2), labels 0 and 1: per class I = 1/2, P = 1, T = 1.
    logits = np.array([[[[0, 0], [0, 0], [20, -20]]]], np.float32)
    labels = np.array([[[0, 1, IGNORE]]])
    np.testing.assert_allclose(losses.multiclass_dice_loss(logits, labels, smooth=0.0), 0.5, rtol=1e-6)
    np.testing.assert_allclose(losses.multiclass_dice_loss(logits, labels, smooth=1.0), 1 / 3, rtol=1e-6)


def test_focal_loss_by_hand():
    ln3 = math.log(3.0)
    logits = np.array([[[[0, ln3], [0, ln3]]]], np.float32)  # p = (1/4, 3/4)
    labels = np.array([[[1, 0]]])
    background = (3 / 4) ** 2 * math.log(4)      # p_t = 1/4
    foreground = (1 / 4) ** 2 * math.log(4 / 3)  # p_t = 3/4
    np.testing.assert_allclose(losses.focal_loss(logits, labels), (background + foreground) / 2, rtol=1e-6)
    np.testing.assert_allclose(losses.focal_loss(logits, labels, alpha=0.25),
                               (0.75 * background + 0.25 * foreground) / 2, rtol=1e-6)


def test_bce_is_stable_for_huge_logits():
    logits = np.array([100.0, -100.0, 100.0, -100.0], np.float32)
    targets = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(logits, targets), 50.0, rtol=1e-6)


def test_perfect_prediction_gives_zero_losses():
    labels = np.array([[[0, 1], [2, 1]]])
    logits = 30.0 * np.eye(3, dtype=np.float32)[labels]
    assert float(losses.softmax_cross_entropy(logits, labels)) < 1e-6
    assert float(losses.focal_loss(logits, labels)) < 1e-6
    assert float(losses.multiclass_dice_loss(logits, labels, smooth=0.0)) < 1e-6


# ---------------------------------------------------------------- degenerate masks

def all_losses_of_labels():
    return {
        "ce": losses.softmax_cross_entropy,
        "focal": losses.focal_loss,
        "focal_gamma_half": functools.partial(losses.focal_loss, gamma=0.5),
        "dice": losses.multiclass_dice_loss,
        "dice_no_background": functools.partial(losses.multiclass_dice_loss, include_background=False),
        "dice_smooth_0": functools.partial(losses.multiclass_dice_loss, smooth=0.0),
    }


@pytest.mark.parametrize("name", sorted(all_losses_of_labels()))
@pytest.mark.parametrize("fill", [0, 1, IGNORE])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_multiclass_gradients_are_finite(name, fill, scale):
    loss = all_losses_of_labels()[name]
    rng = np.random.default_rng(9)
    logits = (scale * rng.normal(size=(2, 4, 4, 3))).astype(np.float32)
    labels = np.full((2, 4, 4), fill)
    value, grad = jax.value_and_grad(loss)(jnp.asarray(logits), labels)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))
    if fill == IGNORE:
        assert float(value) == 0.0
        assert np.all(np.asarray(grad) == 0.0)


def test_gradients_finite_when_prediction_is_exactly_right():
    labels = np.zeros((1, 2, 2), np.int32)
    logits = jnp.asarray(200.0 * np.eye(2, dtype=np.float32)[labels])
    for loss in all_losses_of_labels().values():
        assert np.all(np.isfinite(np.asarray(jax.grad(loss)(logits, labels))))


@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("scale", [1.0, 60.0])
@pytest.mark.parametrize("loss", [
    losses.sigmoid_binary_cross_entropy,
    losses.sigmoid_focal_loss,
    functools.partial(losses.sigmoid_focal_loss, gamma=0.5, alpha=0.25),
    losses.dice_loss,
    functools.partial(losses.dice_loss, smooth=0.0),
    functools.partial(losses.dice_loss, per_image=True),
])
def test_binary_gradients_are_finite(loss, fill, scale):
    logits = jnp.asarray(scale * np.random.default_rng(10).normal(size=(2, 4, 4)), jnp.float32)
    targets = np.full((2, 4, 4), fill, np.float32)
    value, grad = jax.value_and_grad(loss)(logits, targets)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_dice_smooth_zero_empty_prediction_and_target_is_perfect():
    logits = jnp.full((1, 3, 3), -200.0)  # sigmoid underflows to exactly 0
    targets = np.zeros((1, 3, 3), np.float32)
    assert float(losses.dice_loss(logits, targets, smooth=0.0)) == 0.0


def test_labels_outside_class_range_are_ignored():
    logits, labels = random_case((2, 3, 3, 3), seed=11, ignore_fraction=0.0)
    with_bad = labels.copy()
    with_bad[0, 0, 0] = 7
    with_bad[1, 2, 2] = -1
    reference = labels.copy()
    reference[0, 0, 0] = reference[1, 2, 2] = IGNORE
    for loss in all_losses_of_labels().values():
        np.testing.assert_allclose(loss(logits, with_bad), loss(logits, reference), rtol=1e-6)


def test_custom_ignore_label_and_none():
    logits, labels = random_case((2, 3, 3, 3), seed=12, ignore_fraction=0.0)
    ignore_class_0 = np.where(labels == 0, IGNORE, labels)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, ignore_label=0),
                               np_softmax_ce(logits, ignore_class_0), rtol=1e-5)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, ignore_label=None),
                               np_softmax_ce(logits, labels), rtol=1e-5)


def test_bfloat16_logits_computed_in_float32():
    logits, labels = random_case((2, 4, 4, 3), seed=13)
    low = jnp.asarray(logits, jnp.bfloat16)
    for loss in all_losses_of_labels().values():
        got = loss(low, labels)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, loss(np.asarray(low, np.float32), labels), rtol=1e-6)


def test_losses_jit():
    logits, labels = random_case((2, 4, 4, 3), seed=14)
    for loss in all_losses_of_labels().values():
        np.testing.assert_allclose(jax.jit(loss)(logits, labels), loss(logits, labels), rtol=1e-6)


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Explicit, jax.sharding.AxisType.Auto])
def test_loss_fn_on_batch_sharded_over_devices(axis_type):
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(axis_type,))
    sharding = jax.NamedSharding(mesh, jax.P("data"))
    logits, labels = random_case((jax.device_count(), 3, 3, 3), seed=20)
    loss_fn = losses.make_loss_fn("ce+dice+focal")
    value, grad = jax.jit(jax.value_and_grad(lambda x, y: loss_fn(x, y)[0]))(
        jax.device_put(logits, sharding), jax.device_put(labels, sharding))
    expected = (np_softmax_ce(logits, labels) + np_multiclass_dice(logits, labels, 1.0, True)
                + np_focal(logits, labels, 2.0, np.ones(3)))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_uint8_labels_with_many_classes():
    logits, labels = random_case((1, 4, 4, 300), seed=21, ignore_fraction=0.0)
    labels = np.minimum(labels, 254).astype(np.uint8)
    labels[0, 0, :2] = 255  # ignored although 255 < K
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels),
                               np_softmax_ce(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(losses.focal_loss(logits, labels),
                               np_focal(logits, labels, 2.0, np.ones(300)), rtol=1e-5)
    np.testing.assert_allclose(losses.multiclass_dice_loss(logits, labels),
                               np_multiclass_dice(logits, labels, 1.0, True), rtol=1e-5)


def test_empty_batch_gives_zero():
    logits = np.zeros((0, 4, 4, 3), np.float32)
    labels = np.zeros((0, 4, 4), np.int32)
    assert float(losses.softmax_cross_entropy(logits, labels)) == 0.0
    assert float(losses.focal_loss(logits, labels)) == 0.0
    assert float(losses.sigmoid_binary_cross_entropy(logits, logits)) == 0.0


# ---------------------------------------------------------------- bad input

def test_shape_mismatch_raises():
    logits = np.zeros((2, 4, 4, 3), np.float32)
    for loss in all_losses_of_labels().values():
        with pytest.raises(ValueError, match="labels shape"):
            loss(logits, np.zeros((2, 4, 5), np.int32))
        with pytest.raises(ValueError, match="labels must have an integer dtype"):
            loss(logits, np.zeros((2, 4, 4), np.float32))
    for loss in (losses.sigmoid_binary_cross_entropy, losses.dice_loss, losses.sigmoid_focal_loss):
        with pytest.raises(ValueError, match="targets shape"):
            loss(np.zeros((2, 4)), np.zeros((2, 5)))


def test_bad_parameters_raise():
    logits, labels = random_case((1, 2, 2, 3), seed=15)
    with pytest.raises(ValueError, match="gamma"):
        losses.focal_loss(logits, labels, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        losses.focal_loss(logits, labels, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        losses.focal_loss(logits, labels, alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match="alpha"):
        losses.sigmoid_focal_loss(np.zeros(3), np.zeros(3), alpha=[0.5])
    with pytest.raises(ValueError, match="smooth"):
        losses.dice_loss(np.zeros(3), np.zeros(3), smooth=-1.0)
    with pytest.raises(ValueError, match="smooth"):
        losses.multiclass_dice_loss(logits, labels, smooth=float("nan"))
    with pytest.raises(ValueError, match="include_background"):
        losses.multiclass_dice_loss(logits[..., :1], labels, include_background=False)
    with pytest.raises(ValueError, match="per_image"):
        losses.dice_loss(np.zeros((0, 3)), np.zeros((0, 3)), per_image=True)


# ---------------------------------------------------------------- make_loss_fn

def test_make_loss_fn_string_combo():
    logits, labels = random_case((2, 5, 5, 3), seed=16)
    total, components = losses.make_loss_fn("ce+dice")(logits, labels)
    ce, dice = np_softmax_ce(logits, labels), np_multiclass_dice(logits, labels, 1.0, True)
    assert set(components) == {"ce", "dice"}
    np.testing.assert_allclose(components["ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(components["dice"], dice, rtol=1e-5)
    np.testing.assert_allclose(total, ce + dice, rtol=1e-5)
    assert total.dtype == jnp.float32


def test_make_loss_fn_weights_and_options():
    logits, labels = random_case((2, 5, 5, 3), seed=17)
    spec = ml_collections.ConfigDict({"ce": 0.5, "focal": 2.0})
    loss_fn = losses.make_loss_fn(spec, gamma=1.0, alpha=0.25, smooth=3.0)
    total, components = jax.jit(loss_fn)(logits, labels)
    focal = np_focal(logits, labels, 1.0, np.array([0.75, 0.25, 0.25]))
    np.testing.assert_allclose(components["focal"], focal, rtol=1e-5)
    np.testing.assert_allclose(total, 0.5 * np_softmax_ce(logits, labels) + 2.0 * focal, rtol=1e-5)


def test_make_loss_fn_single_names_and_ignore_label():
    logits, labels = random_case((2, 4, 4, 3), seed=18, ignore_fraction=0.0)
    total, components = losses.make_loss_fn("dice", ignore_label=0, include_background=False)(logits, labels)
    expected = np_multiclass_dice(logits, np.where(labels == 0, IGNORE, labels), 1.0, False)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert list(components) == ["dice"]
    assert losses.parse_loss_spec(" ce + focal ") == {"ce": 1.0, "focal": 1.0}


def test_make_loss_fn_gradient_finite():
    logits, labels = random_case((2, 4, 4, 3), seed=19)
    loss_fn = losses.make_loss_fn("ce+dice+focal")
    grad = jax.grad(lambda x: loss_fn(x, labels)[0])(jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)


@pytest.mark.parametrize("spec, message", [
    ("ce+dcie", "unknown loss name 'dcie'; valid names: ce, dice, focal"),
    ({"cross_entropy": 1.0}, "unknown loss name 'cross_entropy'"),
    ("ce+ce", "repeats"),
    ("", "empty name"),
    ("ce+", "empty name"),
    ({}, "empty"),
    ({"ce": -1.0}, "weight for 'ce'"),
    ({"ce": float("inf")}, "weight for 'ce'"),
    ({"ce": "1"}, "weight for 'ce'"),
    (3, "string or a dict"),
])
def test_make_loss_fn_bad_spec(spec, message):
    with pytest.raises(ValueError, match=message):
        losses.make_loss_fn(spec)


def test_make_loss_fn_bad_options():
    with pytest.raises(ValueError, match="unknown loss options.*gama"):
        losses.make_loss_fn("focal", gama=2.0)
    with pytest.raises(ValueError, match="gamma"):
        losses.make_loss_fn("focal", gamma=-2.0)
    with pytest.raises(ValueError, match="smooth"):
        losses.make_loss_fn("dice", smooth=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        losses.make_loss_fn("focal", alpha=2.0)


def test_loss_names_constant():
    assert registry.LOSSES.names() == ("ce", "dice", "focal")
