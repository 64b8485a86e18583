"""Boundary IoU against a loop over the definition and hand-counted bands; task wiring."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics, tasks
from jaxseg.config_files import load_config_file

IGNORE = 255


def np_band(mask, width):
    """Pixels of bool `mask` [H, W] with a pixel outside the mask within `width` (max norm).

    Only pixels inside the image are looked at, so the image border is not a contour.
    """
    height, columns = mask.shape
    band = np.zeros_like(mask)
    for i in range(height):
        for j in range(columns):
            if not mask[i, j]:
                continue
            for u in range(max(0, i - width), min(height, i + width + 1)):
                for v in range(max(0, j - width), min(columns, j + width + 1)):
                    if not mask[u, v]:
                        band[i, j] = True
    return band


def np_boundary_counts(predictions, labels, num_classes, width, pixel_mask=None):
    """Per-class |G_d ∩ P_d| and |G_d ∪ P_d| over the counted pixels of `[N, H, W]` maps."""
    intersection = np.zeros(num_classes, np.int64)
    union = np.zeros(num_classes, np.int64)
    counted = (labels != IGNORE) & (labels < num_classes)
    if pixel_mask is not None:
        counted &= pixel_mask
    for n in range(labels.shape[0]):
        for k in range(num_classes):
            truth = np_band(labels[n] == k, width)
            guess = np_band(predictions[n] == k, width)
            intersection[k] += np.sum(truth & guess & counted[n])
            union[k] += np.sum((truth | guess) & counted[n])
    return intersection, union


def random_maps(shape, num_classes, block, seed):
    """Random label maps made of `block` x `block` tiles (so masks have interiors)."""
    rng = np.random.default_rng(seed)
    n, height, width = shape
    coarse = (n, -(-height // block), -(-width // block))
    labels = np.kron(rng.integers(0, num_classes, coarse), np.ones((1, block, block), int))
    predictions = np.kron(rng.integers(0, num_classes, coarse), np.ones((1, block, block), int))
    labels, predictions = labels[:, :height, :width], predictions[:, :height, :width]
    # Predictions mostly agree with the labels, off by one tile row here and there.
    agree = rng.random(shape) < 0.7
    predictions = np.where(agree, labels, predictions)
    labels = np.where(rng.random(shape) < 0.05, IGNORE, labels)
    return predictions, labels


def square(size, top, left, side):
    mask = np.zeros((1, size, size), np.int32)
    mask[0, top : top + side, left : left + side] = 1
    return mask


def test_shifted_square_by_hand():
    """A 6x6 square and its prediction one column to the right, in a 10x10 image, d = 1."""
    labels = square(10, 2, 2, 6)
    predictions = square(10, 2, 3, 6)
    intersection, union = metrics.boundary_counts(predictions, labels, 2, width=1)
    # Foreground: each band is the square's 20-pixel outer ring; both rings hold rows 2 and
    # 7 of columns 3..7 (10 pixels), so the union is 20 + 20 - 10.
    # Background: each band is the 28-pixel ring just outside its square; both rings hold
    # rows 1 and 8 of columns 2..8 (14 pixels), so the union is 28 + 28 - 14.
    np.testing.assert_array_equal(intersection, [14, 10])
    np.testing.assert_array_equal(union, [42, 30])
    assert intersection.dtype == np.int32 and union.dtype == np.int32
    result = metrics.boundary_iou(intersection, union)
    assert result["per_class_boundary_iou"] == pytest.approx([1 / 3, 1 / 3])
    assert result["boundary_iou"] == pytest.approx(1 / 3)


def test_image_border_is_not_a_contour():
    """A 4x4 square in the corner of an 8x8 image, d = 1: its band is its row 3 and column 3."""
    labels = square(8, 0, 0, 4)
    intersection, union = metrics.boundary_counts(labels, labels, 2, width=1)
    # Background band: row 4 of columns 0..4 and column 4 of rows 0..3.
    np.testing.assert_array_equal(union, [9, 7])
    np.testing.assert_array_equal(intersection, union)
    assert metrics.boundary_iou(intersection, union)["boundary_iou"] == 1.0


def test_wide_band_covers_a_thin_mask():
    """d = 2 in a 3-pixel-wide bar: every bar pixel is within 2 pixels of the outside."""
    labels = np.zeros((1, 9, 9), np.int32)
    labels[0, 3:6, :] = 1
    intersection, union = metrics.boundary_counts(labels, labels, 2, width=2)
    # Background: rows 1, 2 and 6, 7 (within 2 rows of the bar), 9 columns each.
    np.testing.assert_array_equal(union, [36, 27])
    np.testing.assert_array_equal(intersection, union)


def test_class_filling_the_image_has_no_band():
    labels = np.zeros((2, 5, 5), np.int32)
    intersection, union = metrics.boundary_counts(labels, labels, 3, width=2)
    np.testing.assert_array_equal(union, [0, 0, 0])
    result = metrics.boundary_iou(intersection, union)
    assert math.isnan(result["boundary_iou"])
    assert all(math.isnan(value) for value in result["per_class_boundary_iou"])


@pytest.mark.parametrize(
    "shape, num_classes, width, block",
    [((2, 12, 15), 3, 1, 3), ((1, 16, 16), 4, 2, 4), ((3, 9, 11), 2, 3, 1), ((1, 7, 20), 5, 2, 5)],
)
def test_matches_loop_reference_on_random_maps(shape, num_classes, width, block):
    predictions, labels = random_maps(shape, num_classes, block, seed=width + block)
    jitted = jax.jit(metrics.boundary_counts, static_argnums=(2, 3))
    intersection, union = jitted(predictions, labels, num_classes, width)
    expected = np_boundary_counts(predictions, labels, num_classes, width)
    np.testing.assert_array_equal(intersection, expected[0])
    np.testing.assert_array_equal(union, expected[1])
    assert np.all(np.asarray(union) > 0)


def test_per_example_and_per_pixel_weights():
    predictions, labels = random_maps((3, 10, 10), 3, 2, seed=7)
    got = metrics.boundary_counts(predictions, labels, 3, width=1, weights=np.array([1, 0, 1]))
    rows = [0, 2]
    expected = np_boundary_counts(predictions[rows], labels[rows], 3, 1)
    np.testing.assert_array_equal(got, expected)
    pixel_mask = np.random.default_rng(8).random((3, 10, 10)) < 0.5
    got = metrics.boundary_counts(
        predictions, labels, 3, width=1, weights=pixel_mask.astype(np.float32)
    )
    expected = np_boundary_counts(predictions, labels, 3, 1, pixel_mask=pixel_mask)
    np.testing.assert_array_equal(got, expected)


def test_sharded_inputs_over_devices():
    mesh = jax.make_mesh(
        (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Explicit,)
    )
    batch_sharding = jax.NamedSharding(mesh, jax.P("data"))
    predictions, labels = random_maps((jax.device_count(), 8, 8), 3, 2, seed=9)
    got = jax.jit(metrics.boundary_counts, static_argnums=(2, 3))(
        jax.device_put(jnp.asarray(predictions), batch_sharding),
        jax.device_put(jnp.asarray(labels), batch_sharding),
        3,
        1,
    )
    np.testing.assert_array_equal(got, np_boundary_counts(predictions, labels, 3, 1))


def test_boundary_iou_by_hand():
    result = metrics.boundary_iou(np.array([1, 0, 3]), np.array([2, 0, 4]))
    assert result["per_class_boundary_iou"][0] == 0.5
    assert math.isnan(result["per_class_boundary_iou"][1])
    assert result["per_class_boundary_iou"][2] == 0.75
    assert result["boundary_iou"] == pytest.approx((0.5 + 0.75) / 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 0}, "width"),
        ({"width": 1.5}, "width"),
        ({"labels": np.zeros((4, 4), int), "predictions": np.zeros((4, 4), int)}, r"\[N, H, W\]"),
        ({"labels": np.zeros((1, 4, 4))}, "labels must have an integer"),
    ],
)
def test_boundary_counts_bad_input(kwargs, message):
    arguments = {
        "predictions": np.zeros((1, 4, 4), int),
        "labels": np.zeros((1, 4, 4), int),
        "num_classes": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        metrics.boundary_counts(**arguments)


@pytest.mark.parametrize(
    "intersection, union, message",
    [
        (np.array([2, 0]), np.array([1, 0]), "intersection <= union"),
        (np.array([-1, 0]), np.array([1, 0]), "intersection <= union"),
        (np.array([1, 0]), np.array([1, 0, 0]), "one shape"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "one shape"),
    ],
)
def test_boundary_iou_bad_input(intersection, union, message):
    with pytest.raises(ValueError, match=message):
        metrics.boundary_iou(intersection, union)


def tiny_unet_config():
    config = load_config_file(
        os.path.join(os.path.dirname(__file__), "..", "configs", "unet_shapes.py")
    )
    config.data.image_size = 16
    config.model.features = (4, 8)
    config.num_prediction_images = 2
    return config


@pytest.mark.parametrize("boundary_width, expected_width", [(None, 2), (1, 1)])
def test_semantic_task_metrics_match_numpy(boundary_width, expected_width):
    """Two eval batches of a random U-Net: summed counts give IoU, Dice, Boundary IoU."""
    config = tiny_unet_config()
    if boundary_width is not None:
        config.boundary_width = boundary_width
    task = tasks.task_for(config)
    variables = task.init_variables(jax.random.PRNGKey(0), (16, 16, 3))
    eval_step = jax.jit(task.eval_outputs)
    evaluation = task.new_evaluation(source=None)
    rng = np.random.default_rng(0)
    all_predictions, all_labels = [], []
    for first_index, valid in ((0, np.array([1, 1])), (2, np.array([1, 0]))):
        _, labels = random_maps((2, 16, 16), 4, 4, seed=first_index)
        batch = {
            "image": rng.random((2, 16, 16, 3)).astype(np.float32),
            "semantic": labels.astype(np.int32),
            "valid": valid.astype(np.int32),
        }
        outputs = eval_step(variables, batch)
        evaluation.add(outputs, {**batch, "index": np.arange(first_index, first_index + 2)})
        kept = valid.astype(bool)
        all_predictions.append(np.asarray(outputs[1])[kept])
        all_labels.append(labels[kept])
    result, kept_predictions = evaluation.result()

    predictions, labels = np.concatenate(all_predictions), np.concatenate(all_labels)
    assert sorted(kept_predictions) == [0, 1]
    intersection, union = np_boundary_counts(predictions, labels, 4, expected_width)
    counted = labels != IGNORE
    truth, guess = labels[counted], predictions[counted]
    present = union > 0
    assert result["boundary_iou"] == pytest.approx(np.mean(intersection[present] / union[present]))
    for k, name in enumerate(config.data.class_names):
        pixel_union = np.sum((truth == k) | (guess == k))
        overlap = np.sum((truth == k) & (guess == k))
        if pixel_union:
            assert result[f"iou/{name}"] == pytest.approx(overlap / pixel_union)
            assert result[f"dice/{name}"] == pytest.approx(2 * overlap / (pixel_union + overlap))
        if union[k]:
            assert result[f"boundary_iou/{name}"] == pytest.approx(intersection[k] / union[k])
        else:
            assert math.isnan(result[f"boundary_iou/{name}"])
