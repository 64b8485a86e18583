"""A JAX threefry key that draws exactly the numbers of `jax.random.PRNGKey`'s, from flat
counters, so that XLA:CPU compiles its draws in a fraction of the time.

JAX's partitionable threefry computes each element's counter from one iota per dimension
of the drawn shape; XLA:CPU takes seconds to compile that for a 4-D shape (a `[3, 3, 8,
16]` kernel: 5.7 s against 0.3 s for the same 1,152 numbers drawn flat, AMD EPYC AVX2),
so initializing a tiny Panoptic FPN compiled for 27 s (8 s through this key). Every
threefry draw depends only on each element's position in the flattened array, so drawing
`[prod(shape)]` and reshaping gives the numbers of drawing `shape`, bit for bit.
A task's `init_variables` and dropout (`tasks.semantic`) draw through it.
"""
import math

import jax
import jax.extend.random as jax_random

_THREEFRY = jax_random.threefry_prng_impl


def _flat_random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    """Threefry's bits for `shape`, drawn as `[prod(shape)]` and reshaped."""
    return _THREEFRY.random_bits(key, bit_width, (math.prod(shape),)).reshape(shape)


FLAT_THREEFRY = jax_random.define_prng_impl(
    key_shape=_THREEFRY.key_shape,
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_flat_random_bits,
    fold_in=_THREEFRY.fold_in,
    name="threefry2x32_flat",
    tag="fryflat",
)


def flat_key(key: jax.Array) -> jax.Array:
    """A threefry `key` (raw uint32 `[2]` as from `jax.random.PRNGKey`, or typed as from
    `jax.random.key`) as a typed `FLAT_THREEFRY` key: every draw, split and fold-in gives
    what `key`'s would. A typed key of another implementation is returned as it is."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) != _THREEFRY.name:
            return key
        key = jax.random.key_data(key)
    return jax.random.wrap_key_data(key, impl=FLAT_THREEFRY)
