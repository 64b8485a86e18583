"""Confusion matrix against a numpy loop; metrics against hand-computed IoU and Dice."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics

IGNORE = 255


def np_confusion_loop(predictions, labels, num_classes, ignore=IGNORE, pixel_mask=None):
    counts = np.zeros((num_classes, num_classes), np.int64)
    keep = np.ones(labels.shape, bool) if pixel_mask is None else pixel_mask
    for truth, guess, kept in zip(labels.ravel(), predictions.ravel(), keep.ravel()):
        if kept and truth != ignore:
            counts[truth, guess] += 1
    return counts


def random_batch(shape, num_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape)
    labels[rng.random(shape) < 0.15] = IGNORE
    predictions = rng.integers(0, num_classes, shape)
    return predictions, labels


@pytest.mark.parametrize("shape, num_classes", [((2, 7, 9), 5), ((3, 4, 4), 2), ((1, 6, 5), 21)])
def test_confusion_matrix_matches_numpy_loop(shape, num_classes):
    predictions, labels = random_batch(shape, num_classes, seed=num_classes)
    jitted = jax.jit(metrics.confusion_matrix, static_argnums=2)
    got = np.asarray(jitted(predictions, labels, num_classes))
    assert got.shape == (num_classes, num_classes)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np_confusion_loop(predictions, labels, num_classes))


def test_confusion_matrix_rows_are_truth_columns_are_predictions():
    labels = np.array([[0, 0, 1]])
    predictions = np.array([[1, 1, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, labels, 2), [[0, 2], [0, 1]])


def test_confusion_matrix_per_example_weights_exclude_padded_examples():
    predictions, labels = random_batch((3, 5, 6), 4, seed=1)
    got = metrics.confusion_matrix(predictions, labels, 4, weights=np.array([1.0, 0.0, 1.0]))
    expected = (np_confusion_loop(predictions[0], labels[0], 4)
                + np_confusion_loop(predictions[2], labels[2], 4))
    np.testing.assert_array_equal(got, expected)


def test_confusion_matrix_per_pixel_weights():
    predictions, labels = random_batch((2, 5, 6), 3, seed=2)
    pixel_mask = np.random.default_rng(3).random((2, 5, 6)) < 0.5
    got = metrics.confusion_matrix(predictions, labels, 3, weights=pixel_mask.astype(np.float32))
    np.testing.assert_array_equal(got, np_confusion_loop(predictions, labels, 3, pixel_mask=pixel_mask))


def test_confusion_matrix_uint8_labels_and_out_of_range_values():
    labels = np.array([[0, 1, 255, 7, 2]], np.uint8)
    predictions = np.array([[0, 2, 1, 1, 9]], np.uint8)
    # Only (0, 0) and (1, 2) count: 255 is ignored, label 7 and prediction 9 are not classes.
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = expected[1, 2] = 1
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, labels, 3), expected)


def test_confusion_matrix_empty_batch_and_scalar():
    np.testing.assert_array_equal(
        metrics.confusion_matrix(np.zeros((0, 3, 3), int), np.zeros((0, 3, 3), int), 2), np.zeros((2, 2)))
    np.testing.assert_array_equal(metrics.confusion_matrix(np.array(1), np.array(0), 2), [[0, 1], [0, 0]])


def test_confusion_matrix_ignore_label_none_and_custom():
    labels = np.array([0, 1, 1, 2])
    predictions = np.array([0, 1, 0, 2])
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, labels, 3, ignore_label=1),
                                  [[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, labels, 3, ignore_label=None),
                                  [[1, 0, 0], [1, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Explicit, jax.sharding.AxisType.Auto])
def test_confusion_matrix_sharded_inputs_over_devices(axis_type):
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(axis_type,))
    sharding = jax.NamedSharding(mesh, jax.P("data"))
    predictions, labels = random_batch((jax.device_count(), 4, 4), 3, seed=4)
    got = jax.jit(metrics.confusion_matrix, static_argnums=2)(
        jax.device_put(jnp.asarray(predictions), sharding), jax.device_put(jnp.asarray(labels), sharding), 3)
    np.testing.assert_array_equal(got, np_confusion_loop(predictions, labels, 3))


@pytest.mark.parametrize("kwargs, message", [
    (dict(predictions=np.zeros((2, 3), int), labels=np.zeros((2, 4), int), num_classes=2), "predictions shape"),
    (dict(predictions=np.zeros(3), labels=np.zeros(3, int), num_classes=2), "predictions must have an integer"),
    (dict(predictions=np.zeros(3, int), labels=np.zeros(3), num_classes=2), "labels must have an integer"),
    (dict(predictions=np.zeros(3, int), labels=np.zeros(3, int), num_classes=0), "num_classes"),
    (dict(predictions=np.zeros(3, int), labels=np.zeros(3, int), num_classes=2.0), "num_classes"),
    (dict(predictions=np.zeros((2, 3), int), labels=np.zeros((2, 3), int), num_classes=2,
          weights=np.ones(3)), "weights shape"),
])
def test_confusion_matrix_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(**kwargs)


def test_metrics_by_hand_with_absent_class():
    confusion = np.array([[3, 1, 0],
                          [0, 2, 0],
                          [0, 0, 0]])
    result = metrics.segmentation_metrics(confusion)
    # IoU_0 = 3 / (4 + 3 - 3), IoU_1 = 2 / (2 + 3 - 2); class 2 absent from truth and prediction.
    assert result["per_class_iou"][:2] == pytest.approx([3 / 4, 2 / 3])
    assert math.isnan(result["per_class_iou"][2])
    assert result["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    # Dice_0 = 2·3 / (4 + 3), Dice_1 = 2·2 / (2 + 3).
    assert result["per_class_dice"][:2] == pytest.approx([6 / 7, 4 / 5])
    assert math.isnan(result["per_class_dice"][2])
    assert result["mean_dice"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert result["pixel_accuracy"] == pytest.approx(5 / 6)
    assert all(isinstance(result[key], float) for key in ("miou", "pixel_accuracy", "mean_dice"))


def test_class_only_predicted_counts_with_zero_iou():
    confusion = np.array([[2, 1], [0, 0]])  # class 1 predicted once, never true
    result = metrics.segmentation_metrics(confusion)
    assert result["per_class_iou"] == pytest.approx([2 / 3, 0.0])
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["mean_dice"] == pytest.approx((4 / 5 + 0.0) / 2)


def test_metrics_from_labels_end_to_end():
    labels = np.array([[[0, 0], [1, IGNORE]], [[2, 2], [2, 0]]])
    predictions = np.array([[[0, 1], [1, 2]], [[2, 2], [0, 0]]])
    result = metrics.segmentation_metrics(metrics.confusion_matrix(predictions, labels, 3))
    # truth/pred pairs: (0,0) (0,1) (1,1) (2,2) (2,2) (2,0) (0,0)
    # class 0: TP 2, truth 3, predicted 3 -> IoU 2/4; class 1: TP 1, truth 1, predicted 2 -> 1/2;
    # class 2: TP 2, truth 3, predicted 2 -> 2/3.
    assert result["per_class_iou"] == pytest.approx([1 / 2, 1 / 2, 2 / 3])
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)


def test_accumulating_batches_equals_one_big_matrix_and_differs_from_batch_average():
    batch_a = (np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))  # (predictions, labels)
    batch_b = (np.array([[1, 0, 0, 0]]), np.array([[1, 1, 1, 1]]))
    summed = sum(np.asarray(metrics.confusion_matrix(p, l, 2), np.int64) for p, l in (batch_a, batch_b))
    whole = metrics.confusion_matrix(np.concatenate([batch_a[0], batch_b[0]]),
                                     np.concatenate([batch_a[1], batch_b[1]]), 2)
    np.testing.assert_array_equal(summed, whole)
    # Whole set: IoU_0 = 4 / (4 + 7 - 4), IoU_1 = 1 / (4 + 1 - 1).
    assert metrics.segmentation_metrics(summed)["miou"] == pytest.approx((4 / 7 + 1 / 4) / 2)
    # Per batch: batch a has only class 0 (mIoU 1); batch b: IoU_0 = 0, IoU_1 = 1/4.
    per_batch = [metrics.segmentation_metrics(metrics.confusion_matrix(p, l, 2))["miou"]
                 for p, l in (batch_a, batch_b)]
    assert per_batch == pytest.approx([1.0, 1 / 8])
    assert np.mean(per_batch) != pytest.approx((4 / 7 + 1 / 4) / 2)


def test_metrics_match_numpy_on_random_data():
    predictions, labels = random_batch((4, 9, 9), 4, seed=5)
    confusion = np_confusion_loop(predictions, labels, 4)
    result = metrics.segmentation_metrics(confusion)
    keep = labels != IGNORE
    truth, guess = labels[keep], predictions[keep]
    for k in range(4):
        intersection = np.sum((truth == k) & (guess == k))
        union = np.sum((truth == k) | (guess == k))
        assert result["per_class_iou"][k] == pytest.approx(intersection / union)
        assert result["per_class_dice"][k] == pytest.approx(
            2 * intersection / (np.sum(truth == k) + np.sum(guess == k)))
    assert result["pixel_accuracy"] == pytest.approx(np.mean(truth == guess))


@pytest.mark.parametrize("confusion, message", [
    (np.zeros((2, 3)), "square"),
    (np.zeros((2,)), "square"),
    (np.zeros((0, 0)), "square"),
    (np.array([[1, -1], [0, 1]]), "negative"),
    (np.zeros((3, 3)), "no pixel"),
])
def test_segmentation_metrics_bad_input(confusion, message):
    with pytest.raises(ValueError, match=message):
        metrics.segmentation_metrics(confusion)
