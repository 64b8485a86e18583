"""Balanced positive/negative sampling with a fixed-size result (detectron2's rule).

With `P` positives (label 1) and `N` negatives (label 0) available, it picks
`p = min(P, floor(num_samples * positive_fraction))` positives and
`n = min(N, num_samples - p)` negatives uniformly at random without replacement, so
negatives fill in when positives are short. Slots beyond `p + n` are marked invalid.
Random subsets come from one uniform score per example and `lax.top_k`.
"""
import jax
import jax.numpy as jnp


def _check_arguments(labels, num_samples, positive_fraction):
    labels = jnp.asarray(labels)
    if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype}{labels.shape}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive Python int, got {num_samples!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    return labels


def _random_members(scores, is_member, k):
    """`k` indices of members with the highest random scores, and which of them exist."""
    values, indices = jax.lax.top_k(jnp.where(is_member, scores, -1.0), k)
    return indices.astype(jnp.int32), values >= 0.0


def sample_balanced(labels, key, num_samples: int, positive_fraction: float):
    """Samples `num_samples` examples from `labels [A]` int (1 positive, 0 negative, -1 ignored).

    `key` is a `jax.random` key (one per image under `vmap`); `num_samples` (int) and
    `positive_fraction` (float in [0, 1]) are static.
    Returns `(indices [num_samples] int32, valid [num_samples] bool,
    sampled_labels [num_samples] int32)`: positives first, then negatives; invalid slots
    have index 0 (safe to gather) and label -1. The same key gives the same sample.
    """
    labels = _check_arguments(labels, num_samples, positive_fraction)
    # Pad with ignored entries so `top_k` always has at least `num_samples` to choose from.
    labels = jnp.pad(labels, (0, max(num_samples - labels.shape[0], 0)), constant_values=-1)
    scores = jax.random.uniform(key, labels.shape)
    max_positives = int(num_samples * positive_fraction)
    slots = jnp.arange(num_samples)

    negative_indices, negative_exists = _random_members(scores, labels == 0, num_samples)
    if max_positives == 0:
        num_positives = jnp.int32(0)
        positive_indices = jnp.zeros((num_samples,), jnp.int32)
    else:
        positive_indices, positive_exists = _random_members(scores, labels == 1, max_positives)
        num_positives = jnp.sum(positive_exists, dtype=jnp.int32)
        positive_indices = positive_indices[jnp.minimum(slots, max_positives - 1)]

    is_positive = slots < num_positives
    negative_slot = jnp.maximum(slots - num_positives, 0)
    valid = is_positive | negative_exists[negative_slot]
    indices = jnp.where(is_positive, positive_indices, negative_indices[negative_slot])
    sampled_labels = jnp.where(valid, is_positive.astype(jnp.int32), -1)
    return jnp.where(valid, indices, 0), valid, sampled_labels
