"""CPU-fast layers against numpy references and the autodiff of the plain ops."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxseg.models import layers


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------- max-pool


def _numpy_max_pool(x):
    n, h, w, c = x.shape
    out = np.empty((n, h // 2, w // 2, c), x.dtype)
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2))
    return out


def _numpy_max_pool_grad(x, grad_out):
    """Each window's gradient goes to its first maximum in row-major order."""
    grad = np.zeros_like(x)
    n, h, w, c = x.shape
    for b in range(n):
        for i in range(h // 2):
            for j in range(w // 2):
                for ch in range(c):
                    window = x[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, ch].ravel()
                    first = int(np.argmax(window))  # numpy's argmax picks the first
                    grad[b, 2 * i + first // 2, 2 * j + first % 2, ch] = grad_out[b, i, j, ch]
    return grad


@pytest.mark.parametrize("with_ties", [False, True])
def test_max_pool_matches_numpy_and_flax(with_ties):
    x = _random((2, 6, 8, 3))
    if with_ties:  # values in {0, 1, 2}: most windows hold repeated maxima
        x = np.random.default_rng(1).integers(0, 3, size=x.shape).astype(np.float32)
    grad_out = _random((2, 3, 4, 3), seed=2)

    pooled, vjp = jax.vjp(layers.max_pool_2x2, jnp.asarray(x))
    np.testing.assert_array_equal(pooled, _numpy_max_pool(x))
    np.testing.assert_array_equal(vjp(jnp.asarray(grad_out))[0], _numpy_max_pool_grad(x, grad_out))

    flax_pooled, flax_vjp = jax.vjp(lambda v: nn.max_pool(v, (2, 2), strides=(2, 2)), x)
    np.testing.assert_array_equal(pooled, flax_pooled)
    np.testing.assert_array_equal(vjp(grad_out)[0], flax_vjp(grad_out)[0])


def test_max_pool_tie_rule_hand_computed():
    # One window [[5, 7], [7, 7]]: the gradient goes to the top-right 7 only.
    x = jnp.array([5.0, 7.0, 7.0, 7.0]).reshape(1, 2, 2, 1)
    grad = jax.grad(lambda v: 3.0 * layers.max_pool_2x2(v).sum())(x)
    np.testing.assert_array_equal(grad.ravel(), [0.0, 3.0, 0.0, 0.0])


def test_max_pool_rejects_bad_shapes():
    with pytest.raises(ValueError, match="even"):
        layers.max_pool_2x2(jnp.zeros((1, 5, 4, 1)))
    with pytest.raises(ValueError, match="rank 4"):
        layers.max_pool_2x2(jnp.zeros((4, 4, 1)))


# ------------------------------------------------------ transposed conv 2x2


def _numpy_conv_transpose_same(x, kernel):
    """Flax/lax `conv_transpose` stride 2, kernel 2, 'SAME', from its definition.

    The input is dilated by 2 (zeros between pixels), padded by (1, 1), and
    cross-correlated with the (unflipped) kernel at stride 1.
    """
    n, h, w, cin = x.shape
    dilated = np.zeros((n, 2 * h - 1, 2 * w - 1, cin), x.dtype)
    dilated[:, ::2, ::2] = x
    padded = np.pad(dilated, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, 2 * h, 2 * w, kernel.shape[3]), np.float64)
    for dy in range(2):
        for dx in range(2):
            patch = padded[:, dy : dy + 2 * h, dx : dx + 2 * w]
            out += np.einsum("nhwc,co->nhwo", patch, kernel[dy, dx])
    return out


def test_upsample_matches_numpy_definition():
    x, kernel = _random((2, 3, 4, 5)), _random((2, 2, 5, 6), seed=1)
    np.testing.assert_allclose(
        layers.upsample_2x2(x, kernel), _numpy_conv_transpose_same(x, kernel), rtol=1e-5, atol=1e-5
    )


def test_conv_transpose_module_interchangeable_with_flax():
    x = jnp.asarray(_random((2, 4, 4, 3)))
    flax_layer = nn.ConvTranspose(7, (2, 2), strides=(2, 2))
    ours = layers.ConvTranspose2x2(7)
    params = flax_layer.init(jax.random.key(0), x)
    own_params = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, own_params)
    np.testing.assert_array_equal(params["params"]["kernel"], own_params["params"]["kernel"])

    params = jax.tree.map(lambda p: p + _random(p.shape, seed=3), params)  # nonzero bias
    cotangent = jnp.asarray(_random((2, 8, 8, 7), seed=4))
    expected, expected_vjp = jax.vjp(flax_layer.apply, params, x)
    got, got_vjp = jax.vjp(ours.apply, params, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(jax.tree.leaves(got_vjp(cotangent)), jax.tree.leaves(expected_vjp(cotangent))):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_upsample_rejects_bad_kernel():
    with pytest.raises(ValueError, match="kernel"):
        layers.upsample_2x2(jnp.zeros((1, 2, 2, 3)), jnp.zeros((3, 3, 3, 4)))


# ------------------------------------------------------- row-blocked conv


def _plain_conv(x, kernel):
    return lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _numpy_kernel_grad(x, grad_y):
    """d(sum(conv(x, k) * grad_y))/dk for a 3x3 'SAME' conv, from the definition."""
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(np.float64)
    grad = np.zeros((3, 3, x.shape[3], grad_y.shape[3]))
    for dy in range(3):
        for dx in range(3):
            grad[dy, dx] = np.einsum("nhwc,nhwo->co", padded[:, dy : dy + h, dx : dx + w], grad_y)
    return grad


@pytest.mark.parametrize("block_bytes", [1, 700, 10**9])  # 1 row, uneven blocks, one block
def test_row_blocked_conv_matches_autodiff_and_numpy(monkeypatch, block_bytes):
    monkeypatch.setattr(layers, "_ROW_BLOCK_BYTES", block_bytes)
    x, kernel = _random((2, 7, 5, 3)), _random((3, 3, 3, 4), seed=1)
    grad_y = _random((2, 7, 5, 4), seed=2)

    y, vjp = jax.vjp(lambda a, b: layers.row_blocked_conv(a, b, (1, 1), "SAME"), x, kernel)
    expected_y, expected_vjp = jax.vjp(_plain_conv, x, kernel)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    grad_x, grad_kernel = vjp(grad_y)
    expected_x, expected_kernel = expected_vjp(grad_y)
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_kernel, expected_kernel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_kernel, _numpy_kernel_grad(x, grad_y), rtol=1e-5, atol=1e-5)


def test_row_blocked_conv_as_flax_conv_op():
    x = jnp.asarray(_random((1, 6, 6, 2)))
    plain = nn.Conv(3, (3, 3), padding="SAME")
    blocked = nn.Conv(3, (3, 3), padding="SAME", conv_general_dilated=layers.row_blocked_conv)
    params = plain.init(jax.random.key(0), x)
    np.testing.assert_allclose(blocked.apply(params, x), plain.apply(params, x), rtol=1e-6)


def test_row_blocked_conv_rejects_unsupported():
    x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(ValueError, match="stride 1"):
        layers.row_blocked_conv(x, kernel, (2, 2), "SAME")
    with pytest.raises(ValueError, match="rank 4"):
        layers.row_blocked_conv(x[0], kernel, (1, 1), "SAME")
