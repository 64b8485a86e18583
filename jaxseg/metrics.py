"""Semantic-segmentation metrics from a confusion matrix.

`confusion_matrix` runs under `jax.jit` per eval batch; the caller sums the per-batch
matrices over the whole eval set (in int64 numpy, say) and calls `segmentation_metrics`
once on the sum. Averaging per-batch mIoU instead would weight small batches and
classes missing from a batch wrongly.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np


def _expand_weights(weights, shape):
    """Reshapes `weights` whose shape is a leading prefix of `shape` to broadcast over it."""
    weights = jnp.asarray(weights)
    if weights.shape != shape[:weights.ndim]:
        raise ValueError(
            f"weights shape {weights.shape} must equal the leading axes of labels shape {shape}")
    return weights.reshape(weights.shape + (1,) * (len(shape) - weights.ndim))


def confusion_matrix(predictions, labels, num_classes, ignore_label=255, weights=None):
    """Counts (true class, predicted class) pairs; jittable with static `num_classes`.

    Implemented as a `bincount` of `label·K + prediction` into K·K bins (+1 overflow bin
    for excluded pixels) per example of the leading (batch) axis, summed over the batch:
    this also runs when that axis is sharded over a mesh with Explicit axis types, where
    a single flat `bincount` fails. On XLA:CPU for 8×128×128 pixels (medians, loaded
    2-core machine) it took about 0.2 ms for K = 4 and K = 21; a single flat `bincount`
    0.1–0.16 ms; a one-hot matmul 0.25–0.7 ms (K = 4) and 3.6–9.7 ms (K = 21).

    Args:
      predictions: `[N, ...]` int predicted classes (e.g. `[N, H, W]` argmax of logits).
      labels: `[N, ...]` int true classes, same shape (a 0-D or 1-D input counts as one
        example). Pixels labelled `ignore_label` or outside `[0, K)` are not counted.
      num_classes: K, a Python int.
      ignore_label: label value not counted (None: only labels outside `[0, K)`).
      weights: optional mask whose shape is the leading axes of `labels` (e.g. `[N]`
        for padded eval batches, or `[N, H, W]`); a pixel counts once where its weight
        is nonzero and not at all where it is 0.

    Returns:
      `[K, K]` int32, rows = ground truth, columns = prediction (exact while one call
      counts fewer than 2**31 pixels). Predictions outside `[0, K)` are not counted.
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    predictions = jnp.asarray(predictions)
    labels = jnp.asarray(labels)
    for name, values in (("predictions", predictions), ("labels", labels)):
        if not jnp.issubdtype(values.dtype, jnp.integer):
            raise ValueError(f"{name} must have an integer dtype, got {values.dtype}")
    predictions = predictions.astype(jnp.int32)
    labels = labels.astype(jnp.int32)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions shape {predictions.shape} must equal labels shape {labels.shape}")
    counted = (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (predictions < num_classes)
    if ignore_label is not None:
        counted &= labels != ignore_label
    if weights is not None:
        counted &= _expand_weights(weights, labels.shape) != 0
    num_bins = num_classes * num_classes + 1
    pair_index = jnp.where(counted, labels * num_classes + predictions, num_bins - 1)
    if pair_index.ndim >= 2:
        per_example_index = pair_index.reshape(pair_index.shape[0], math.prod(pair_index.shape[1:]))
    else:
        per_example_index = pair_index.reshape(1, pair_index.size)
    per_example_counts = jax.vmap(lambda index: jnp.bincount(index, length=num_bins))(per_example_index)
    counts = jnp.sum(per_example_counts, axis=0)
    return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def segmentation_metrics(confusion):
    """mIoU, per-class IoU, pixel accuracy and Dice from a `[K, K]` confusion matrix.

    With TP_k the diagonal, G_k the row sums (true pixels) and P_k the column sums
    (predicted pixels): IoU_k = TP_k / (G_k + P_k - TP_k), Dice_k = 2·TP_k / (G_k + P_k).
    A class absent from both truth and prediction has NaN IoU and Dice and is left out
    of `miou` and `mean_dice`.

    Args:
      confusion: `[K, K]` non-negative integer counts, rows = truth, cols = prediction,
        accumulated over the whole eval set.

    Returns:
      dict of Python floats `miou`, `pixel_accuracy`, `mean_dice` and lists of floats
      `per_class_iou`, `per_class_dice` (length K).

    Raises:
      ValueError if `confusion` is not square, has negative entries or counts no pixel.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] == 0:
        raise ValueError(f"confusion must be a non-empty square [K, K] matrix, got shape {confusion.shape}")
    if np.any(confusion < 0):
        raise ValueError("confusion must not have negative counts")
    total = confusion.sum()
    if total == 0:
        raise ValueError("confusion counts no pixel; metrics are undefined")
    true_positive = np.diag(confusion)
    true_count = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    present = (true_count + predicted_count) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, true_positive / (true_count + predicted_count - true_positive), np.nan)
        dice = np.where(present, 2.0 * true_positive / (true_count + predicted_count), np.nan)
    return {
        "miou": float(np.mean(iou[present])),
        "per_class_iou": [float(value) for value in iou],
        "pixel_accuracy": float(true_positive.sum() / total),
        "mean_dice": float(np.mean(dice[present])),
        "per_class_dice": [float(value) for value in dice],
    }
