import functools

import jax
import numpy as np
import pytest

from jaxseg.ops import sample_balanced


def make_labels(rng, num_positive, num_negative, num_ignored):
    labels = np.array([1] * num_positive + [0] * num_negative + [-1] * num_ignored, np.int32)
    return labels[rng.permutation(len(labels))]


def expected_counts(labels, num_samples, positive_fraction):
    """detectron2's rule: positives capped by the fraction, negatives fill the rest."""
    num_positive = min(int(np.sum(labels == 1)), int(num_samples * positive_fraction))
    return num_positive, min(int(np.sum(labels == 0)), num_samples - num_positive)


def check_sample(labels, indices, valid, sampled_labels, num_positive, num_negative):
    indices, valid, sampled_labels = map(np.asarray, (indices, valid, sampled_labels))
    assert indices.dtype == sampled_labels.dtype == np.int32 and valid.dtype == bool
    assert valid.sum() == num_positive + num_negative
    assert valid[: num_positive + num_negative].all()
    np.testing.assert_array_equal(sampled_labels, [1] * num_positive + [0] * num_negative + [-1] * (~valid).sum())
    np.testing.assert_array_equal(labels[indices[valid]], sampled_labels[valid])
    assert len(set(indices[valid].tolist())) == valid.sum()
    assert not indices[~valid].any()


@pytest.mark.parametrize(
    "num_positive, num_negative, num_ignored, num_samples, positive_fraction",
    [
        (10, 500, 30, 64, 0.25),  # positives short: negatives fill in
        (100, 500, 0, 64, 0.25),  # positives capped at 16
        (3, 5, 40, 64, 0.5),  # both short: invalid slots
        (40, 0, 5, 32, 0.5),  # no negatives
        (5, 3, 0, 16, 0.5),  # fewer labels than samples
        (20, 20, 0, 16, 0.0),  # no positives allowed
        (0, 0, 0, 8, 0.5),  # no examples at all
    ],
)
def test_exact_counts_and_valid_indices(num_positive, num_negative, num_ignored, num_samples, positive_fraction):
    labels = make_labels(np.random.default_rng(num_positive), num_positive, num_negative, num_ignored)
    sampler = jax.jit(sample_balanced, static_argnums=(2, 3))
    result = sampler(labels, jax.random.key(0), num_samples, positive_fraction)
    assert all(r.shape == (num_samples,) for r in result)
    check_sample(labels, *result, *expected_counts(labels, num_samples, positive_fraction))


def test_same_key_same_sample_and_different_keys_differ():
    labels = make_labels(np.random.default_rng(1), 50, 400, 50)
    first = sample_balanced(labels, jax.random.key(3), 64, 0.25)
    again = sample_balanced(labels, jax.random.key(3), 64, 0.25)
    other = sample_balanced(labels, jax.random.key(4), 64, 0.25)
    np.testing.assert_array_equal(first[0], again[0])
    assert set(np.asarray(first[0]).tolist()) != set(np.asarray(other[0]).tolist())


def test_vmap_with_a_key_per_image_and_uniform_choice():
    rng = np.random.default_rng(2)
    labels = make_labels(rng, 20, 30, 10)
    keys = jax.random.split(jax.random.key(9), 2000)
    sampler = jax.jit(jax.vmap(functools.partial(sample_balanced, num_samples=20, positive_fraction=0.25),
                               in_axes=(None, 0)))
    indices, valid, sampled_labels = sampler(labels, keys)
    for i in (0, 1999):
        single = sample_balanced(labels, keys[i], 20, 0.25)
        for got, one in zip((indices, valid, sampled_labels), single):
            np.testing.assert_array_equal(got[i], one)
    assert np.all(valid)
    # Each of 20 positives is drawn with probability 5/20, each of 30 negatives with 15/30.
    counts = np.bincount(np.asarray(indices).ravel(), minlength=len(labels))
    np.testing.assert_allclose(counts[labels == 1] / 2000, 0.25, atol=0.05)
    np.testing.assert_allclose(counts[labels == 0] / 2000, 0.5, atol=0.06)
    assert not counts[labels == -1].any()


def test_sampler_rejects_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="labels"):
        sample_balanced(np.zeros((3, 2), np.int32), key, 4, 0.5)
    with pytest.raises(ValueError, match="labels"):
        sample_balanced(np.zeros((3,), np.float32), key, 4, 0.5)
    with pytest.raises(ValueError, match="num_samples"):
        sample_balanced(np.zeros((3,), np.int32), key, 0, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_balanced(np.zeros((3,), np.int32), key, 4, 1.5)
