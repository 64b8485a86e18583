"""The segmentation losses, each registered by name in `registry.LOSSES` (see `jaxseg.losses`)."""
import math

import jax
import jax.numpy as jnp

from jaxseg import registry


def _checked_labels(logits, labels):
    """Validates integer `labels [...]` against `logits [..., K]`; returns them as int32.

    int32 keeps comparisons with K and the ignore label exact for narrow dtypes (uint8).
    """
    labels = jnp.asarray(labels)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have a class axis last, got shape {logits.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels shape {labels.shape} must equal logits shape without its class "
            f"axis, {logits.shape[:-1]}")
    return labels.astype(jnp.int32)


def _check_same_shapes(logits, targets):
    if logits.shape != targets.shape:
        raise ValueError(f"targets shape {targets.shape} must equal logits shape {logits.shape}")


def _valid_pixels(labels, num_classes, ignore_label):
    """Boolean mask `[...]` of pixels with a label in `[0, num_classes)`, not ignored."""
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        valid &= labels != ignore_label
    return valid


def _masked_mean(values, mask):
    """Mean of `values` where `mask` is true; 0.0 when the mask is empty."""
    count = jnp.sum(mask.astype(jnp.float32))
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(count, 1.0)


def _mean_or_zero(values):
    """Mean of all elements of `values`; 0.0 for an empty array."""
    return jnp.sum(values) / max(values.size, 1)


def _valid_one_hot(logits, labels, ignore_label):
    """`(valid [...] bool, one_hot [..., K] float32)` with all-zero rows at invalid pixels."""
    labels = _checked_labels(logits, labels)
    num_classes = logits.shape[-1]
    valid = _valid_pixels(labels, num_classes, ignore_label)
    return valid, jax.nn.one_hot(jnp.where(valid, labels, -1), num_classes, dtype=jnp.float32)


def _true_class_log_prob(logits, labels, ignore_label):
    """`(log softmax(logits)[label] [...], valid [...] bool, one_hot [..., K] float32)`.

    Invalid pixels get log-probability 0. The selection is a one-hot product rather
    than a gather, so it also runs on batches sharded over a mesh with Explicit axis
    types (where a gather needs an explicit output sharding).
    """
    valid, one_hot = _valid_one_hot(logits, labels, ignore_label)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(log_probs * one_hot, axis=-1), valid, one_hot


def _sigmoid_bce_per_element(logits, targets):
    """Stable `-(t·log σ(x) + (1 - t)·log(1 - σ(x)))` as `max(x, 0) - x·t + log(1 + e^-|x|)`."""
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def _modulating_factor(one_minus_p, gamma):
    """`(1 - p_t) ** gamma` with a finite gradient where `1 - p_t` is exactly 0."""
    if gamma == 0:
        return jnp.ones_like(one_minus_p)
    positive = one_minus_p > 0
    safe_base = jnp.where(positive, one_minus_p, 1.0)
    return jnp.where(positive, safe_base ** gamma, 0.0)


def check_gamma(gamma):
    """ValueError unless the focal exponent `gamma` is a finite number >= 0."""
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")


def check_smooth(smooth):
    """ValueError unless Dice's smoothing term `smooth` is a finite number >= 0."""
    if not (isinstance(smooth, (int, float)) and math.isfinite(smooth) and smooth >= 0):
        raise ValueError(f"smooth must be a finite number >= 0, got {smooth!r}")


def _dice_ratio(intersection, prob_sum, target_sum, smooth):
    """`(2·I + s) / (P + T + s)`, defined as 1 when the denominator is 0 (both empty)."""
    denominator = prob_sum + target_sum + smooth
    positive = denominator > 0
    safe_denominator = jnp.where(positive, denominator, 1.0)
    return jnp.where(positive, (2.0 * intersection + smooth) / safe_denominator, 1.0)


@registry.LOSSES.register("ce")
def softmax_cross_entropy(logits, labels, ignore_label=255):
    """Mean softmax cross-entropy over the non-ignored pixels.

    Args:
      logits: `[..., K]` float (e.g. `[N, H, W, K]`).
      labels: `[...]` int class indices (e.g. `[N, H, W]`).
      ignore_label: label value excluded from the loss (None: ignore nothing beyond
        labels outside `[0, K)`).

    Returns:
      float32 scalar: `mean(-log softmax(logits)[label])` over valid pixels, 0.0 if none.
    """
    log_p_true, valid, _ = _true_class_log_prob(
        jnp.asarray(logits, jnp.float32), labels, ignore_label)
    return _masked_mean(-log_p_true, valid)


def sigmoid_binary_cross_entropy(logits, targets):
    """Mean binary cross-entropy of `sigmoid(logits)` against targets, computed stably.

    Per element `-(t·log σ(x) + (1 - t)·log(1 - σ(x)))`, evaluated as
    `max(x, 0) - x·t + log(1 + exp(-|x|))` so that large |x| cannot overflow.

    Args:
      logits: `[...]` float, any shape.
      targets: `[...]` float in `[0, 1]` (normally exactly 0 or 1), same shape as logits.

    Returns:
      float32 scalar: mean over all elements (0.0 for empty inputs).
    """
    logits = jnp.asarray(logits, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    _check_same_shapes(logits, targets)
    return _mean_or_zero(_sigmoid_bce_per_element(logits, targets))


def check_focal_alpha(alpha):
    """ValueError for a number `alpha` outside [0, 1] (a per-class sequence is checked later)."""
    if isinstance(alpha, (int, float)) and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1] when a number, got {alpha!r}")


def _class_alpha(alpha, num_classes):
    """Per-class focal weights `[K]` float32 from `alpha` (see `focal_loss`)."""
    check_focal_alpha(alpha)
    if alpha is None:
        return jnp.ones((num_classes,), jnp.float32)
    if isinstance(alpha, (int, float)):
        return jnp.full((num_classes,), alpha, jnp.float32).at[0].set(1.0 - alpha)
    weights = jnp.asarray(alpha, jnp.float32)
    if weights.shape != (num_classes,):
        raise ValueError(
            f"alpha must be None, a number or {num_classes} per-class weights, "
            f"got shape {weights.shape}")
    return weights


@registry.LOSSES.register("focal", options=("gamma", "alpha"))
def focal_loss(logits, labels, gamma=2.0, alpha=None, ignore_label=255):
    """Multi-class softmax focal loss (Lin et al. 2017), mean over non-ignored pixels.

    Per pixel `-alpha_t · (1 - p_t)^gamma · log p_t`, where `p_t` is the softmax
    probability of the true class. `gamma=0, alpha=None` is plain cross-entropy.

    Args:
      logits: `[..., K]` float (e.g. `[N, H, W, K]`).
      labels: `[...]` int class indices.
      gamma: focusing exponent >= 0.
      alpha: class weighting `alpha_t`:
        None: 1 for every class;
        a number a in [0, 1]: the paper's binary convention with class 0 as background,
          i.e. weight a for every foreground class (1..K-1) and 1 - a for class 0;
        a sequence of K numbers: the weight of each class.
      ignore_label: label value excluded from the loss.

    Returns:
      float32 scalar, 0.0 if every pixel is ignored.
    """
    check_gamma(gamma)
    logits = jnp.asarray(logits, jnp.float32)
    log_p_true, valid, one_hot = _true_class_log_prob(logits, labels, ignore_label)
    alpha_true = jnp.sum(one_hot * _class_alpha(alpha, logits.shape[-1]), axis=-1)
    one_minus_p = -jnp.expm1(log_p_true)
    per_pixel = -alpha_true * _modulating_factor(one_minus_p, gamma) * log_p_true
    return _masked_mean(per_pixel, valid)


def sigmoid_focal_loss(logits, targets, gamma=2.0, alpha=None):
    """Binary sigmoid focal loss (Lin et al. 2017), mean over all elements.

    Per element `alpha_t · (1 - p_t)^gamma · BCE(x, t)` with `p = sigmoid(x)`,
    `p_t = p·t + (1 - p)·(1 - t)` and `alpha_t = alpha·t + (1 - alpha)·(1 - t)`
    (the paper uses alpha=0.25); alpha=None weights both classes by 1.

    Args:
      logits: `[...]` float.
      targets: `[...]` float in `[0, 1]`, same shape as logits.
      gamma: focusing exponent >= 0.
      alpha: None or a number in [0, 1], the weight of the positive class.

    Returns:
      float32 scalar (0.0 for empty inputs).
    """
    check_gamma(gamma)
    if not (alpha is None or isinstance(alpha, (int, float))):
        raise ValueError(f"alpha must be None or a number in [0, 1], got {alpha!r}")
    check_focal_alpha(alpha)
    logits = jnp.asarray(logits, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    _check_same_shapes(logits, targets)
    probs = jax.nn.sigmoid(logits)
    one_minus_p_true = probs * (1.0 - targets) + (1.0 - probs) * targets
    per_element = _modulating_factor(one_minus_p_true, gamma) * _sigmoid_bce_per_element(logits, targets)
    if alpha is not None:
        per_element *= alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return _mean_or_zero(per_element)


def dice_loss(logits, targets, smooth=1.0, per_image=False):
    """Binary soft Dice loss on `p = sigmoid(logits)`.

    With `per_image=False` the sums run over **all** elements (batch included), which is
    exactly the formula `1 - (2·Σ(p·t) + s) / (Σp + Σt + s)`. With `per_image=True` the
    same ratio is computed per example (sums over all axes but the first) and the loss
    is `1 -` its mean over the batch. With `smooth=0` an empty prediction and empty
    target count as a perfect match (ratio 1).

    Args:
      logits: `[...]` float (`[N, ...]` when per_image).
      targets: `[...]` float in `[0, 1]`, same shape as logits.
      smooth: `s >= 0`.
      per_image: see above.

    Returns:
      float32 scalar in `[0, 1]`.
    """
    check_smooth(smooth)
    logits = jnp.asarray(logits, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    _check_same_shapes(logits, targets)
    if per_image and logits.ndim < 1:
        raise ValueError("logits must have a batch axis when per_image=True")
    if per_image and logits.shape[0] == 0:
        raise ValueError("logits must hold at least one example when per_image=True")
    axes = tuple(range(1, logits.ndim)) if per_image else None
    probs = jax.nn.sigmoid(logits)
    ratio = _dice_ratio(jnp.sum(probs * targets, axis=axes), jnp.sum(probs, axis=axes),
                        jnp.sum(targets, axis=axes), smooth)
    return 1.0 - jnp.mean(ratio)


@registry.LOSSES.register("dice", options=("smooth", "include_background"))
def multiclass_dice_loss(logits, labels, smooth=1.0, ignore_label=255, include_background=True):
    """Multi-class soft Dice loss on softmax probabilities and one-hot labels.

    For each class k, with sums over all valid (non-ignored) pixels of the batch:
    `D_k = (2·Σ p_k·y_k + s) / (Σ p_k + Σ y_k + s)`; the loss is `1 - mean_k D_k`.

    Args:
      logits: `[..., K]` float (e.g. `[N, H, W, K]`).
      labels: `[...]` int class indices.
      smooth: `s >= 0`.
      ignore_label: label value excluded from every sum.
      include_background: whether class 0 takes part in the mean (needs K >= 2 if not).

    Returns:
      float32 scalar in `[0, 1]`.
    """
    check_smooth(smooth)
    logits = jnp.asarray(logits, jnp.float32)
    valid, one_hot = _valid_one_hot(logits, labels, ignore_label)
    if not include_background and logits.shape[-1] < 2:
        raise ValueError("include_background=False needs logits with at least 2 classes")
    probs = jax.nn.softmax(logits, axis=-1) * valid[..., None]
    sum_axes = tuple(range(logits.ndim - 1))
    ratio = _dice_ratio(jnp.sum(probs * one_hot, axis=sum_axes), jnp.sum(probs, axis=sum_axes),
                        jnp.sum(one_hot, axis=sum_axes), smooth)
    if not include_background:
        ratio = ratio[1:]
    return 1.0 - jnp.mean(ratio)
