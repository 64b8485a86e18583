"""`flat_key`: what is drawn through it (parameters, dropout masks) is bit-identical to
what JAX's own threefry key draws (the reference), and its counters are flat (the reason
it compiles fast)."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.ops.flat_key import FLAT_THREEFRY, flat_key

SHAPES = [(3, 3, 2, 4), (7,), (), (0, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_draw_equals_jax_threefry(shape):
    draws = {
        "bits": lambda key: jax.random.bits(key, shape),
        "uniform": lambda key: jax.random.uniform(key, shape),
        "bernoulli": lambda key: jax.random.bernoulli(key, 0.9, shape),
        "normal": lambda key: jax.random.normal(key, shape, jnp.float32),
        "truncated": lambda key: jax.random.truncated_normal(key, -2.0, 2.0, shape),
        "after_split": lambda key: jax.random.normal(jax.random.split(key)[1], shape),
        "after_fold_in": lambda key: jax.random.uniform(jax.random.fold_in(key, 12345), shape),
    }
    expected = jax.jit(lambda key: {name: draw(key) for name, draw in draws.items()})
    got = jax.jit(lambda key: {name: draw(flat_key(key)) for name, draw in draws.items()})
    for seed in (0, 7):
        raw = jax.random.PRNGKey(seed)
        jax.tree.map(np.testing.assert_array_equal, got(raw), expected(raw))


class _Nested(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), kernel_init=nn.initializers.he_normal())(x)
        extra = self.param("extra", nn.initializers.truncated_normal(0.02), (2, 3, 5, 7))
        return nn.Dense(3)(x.reshape(x.shape[0], -1)) + extra.sum()


def test_a_typed_key_draws_as_it_would_and_another_implementation_is_kept():
    typed = jax.random.key(5)
    np.testing.assert_array_equal(
        jax.random.uniform(flat_key(typed), (2, 3)), jax.random.uniform(typed, (2, 3))
    )
    assert jax.random.key_impl(flat_key(typed)) == FLAT_THREEFRY
    other = jax.random.key(5, impl="rbg")
    assert flat_key(other) is other


def test_a_models_parameters_equal_those_of_the_raw_key():
    images = jnp.zeros((1, 8, 8, 3))
    model = _Nested()
    raw = jax.random.PRNGKey(3)
    expected = jax.jit(model.init)(raw, images)
    got = jax.jit(lambda key, x: model.init(flat_key(key), x))(raw, images)
    assert len(jax.tree.leaves(got)) == 5
    jax.tree.map(np.testing.assert_array_equal, got, expected)


def _iota_ranks(hlo: str) -> set[int]:
    """The ranks of the iotas in a StableHLO module's text."""
    shapes = re.findall(r"stablehlo\.iota dim = \d+ : tensor<([0-9x]+)x[a-z0-9]+>", hlo)
    return {len(shape.split("x")) for shape in shapes}


def test_a_kernel_is_drawn_from_one_dimensional_counters():
    kernel = lambda key: jax.random.truncated_normal(key, -2.0, 2.0, (3, 3, 8, 16))
    raw = jax.random.PRNGKey(0)
    assert _iota_ranks(jax.jit(kernel).lower(raw).as_text()) == {4}
    assert _iota_ranks(jax.jit(lambda key: kernel(flat_key(key))).lower(raw).as_text()) == {1}
