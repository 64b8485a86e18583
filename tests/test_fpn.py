"""FPN: top-down arithmetic vs numpy, upsampling, levels, errors; ResNetFPN shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import FPN, ResNetFPN
from jaxseg.models.fpn import upsample_nearest_2x

TINY_CHANNELS = {"C2": 2, "C3": 3, "C4": 4, "C5": 5}


def _features(size=32, batch=2, channels=TINY_CHANNELS, seed=0):
    """C2..C5 of an image of size x size: strides 4..32."""
    rng = np.random.default_rng(seed)
    return {
        key: jnp.asarray(rng.normal(size=(batch, size // 2**level, size // 2**level, c)).astype(np.float32))
        for level, (key, c) in enumerate(channels.items(), start=2)
    }


def _numpy_conv_same(x, kernel, bias):
    """Stride-1 conv, odd k x k kernel, zero padding k // 2, by definition."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[3]))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = np.einsum("nabc,abco->no", padded[:, i : i + k, j : j + k], kernel)
    return out + bias


def test_upsample_is_numpy_repeat_and_its_gradient_sums_blocks():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    y = upsample_nearest_2x(jnp.asarray(x))
    np.testing.assert_array_equal(y, np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))
    upstream = np.random.default_rng(1).normal(size=(2, 6, 8, 5)).astype(np.float32)
    grad = jax.grad(lambda v: jnp.sum(upsample_nearest_2x(v) * upstream))(jnp.asarray(x))
    expected = upstream.reshape(2, 3, 2, 4, 2, 5).sum(axis=(2, 4))
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="rank 4"):
        upsample_nearest_2x(jnp.zeros((3, 4, 5)))


def test_top_down_pathway_matches_numpy():
    features = _features()
    model = FPN(out_channels=3, min_level=2, max_level=6)
    rng = np.random.default_rng(1)
    params = jax.tree.map(  # random kernels and biases, drawn without compiling the initialisers
        lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype),
        jax.eval_shape(lambda: model.init(jax.random.key(0), features))["params"],
    )
    pyramid = jax.jit(model.apply)({"params": params}, features)

    expected = {}
    merged = None
    for level in (5, 4, 3, 2):
        lateral_params = params[f"lateral{level}"]
        lateral = (
            np.einsum("nhwc,co->nhwo", features[f"C{level}"], lateral_params["kernel"][0, 0])
            + lateral_params["bias"]
        )
        merged = lateral if merged is None else lateral + np.repeat(np.repeat(merged, 2, axis=1), 2, axis=2)
        output_params = params[f"output{level}"]
        expected[f"P{level}"] = _numpy_conv_same(merged, output_params["kernel"], output_params["bias"])
    expected["P6"] = expected["P5"][:, ::2, ::2]

    assert sorted(pyramid) == ["P2", "P3", "P4", "P5", "P6"]
    for key, value in expected.items():
        np.testing.assert_allclose(pyramid[key], value, rtol=1e-4, atol=1e-4, err_msg=key)


def test_hand_set_identity_convs_give_sums_of_upsampled_inputs():
    # One channel everywhere, laterals and output convs set to the identity:
    # P5 = C5, P4 = C4 + up(C5), P3 = C3 + up(P4), P2 = C2 + up(P3).
    features = {key: jnp.full((1, 8 // 2 ** (level - 2), 8 // 2 ** (level - 2), 1), float(level))
                for level, key in enumerate(TINY_CHANNELS, start=2)}
    model = FPN(out_channels=1, max_level=5)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), features))["params"]
    identity_3x3 = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0)
    params = {
        name: {
            "kernel": jnp.ones((1, 1, 1, 1)) if name.startswith("lateral") else identity_3x3,
            "bias": jnp.zeros(1),
        }
        for name in params
    }
    pyramid = model.apply({"params": params}, features)
    for key, value in {"P5": 5.0, "P4": 9.0, "P3": 12.0, "P2": 14.0}.items():
        np.testing.assert_array_equal(pyramid[key], np.full(pyramid[key].shape, value), err_msg=key)


def test_fast_cpu_ops_give_the_same_pyramid_and_gradients():
    features = _features(channels={key: 8 for key in TINY_CHANNELS})
    plain, fast = FPN(out_channels=8), FPN(out_channels=8, fast_cpu_ops=True)
    params = jax.jit(plain.init)(jax.random.key(0), features)["params"]

    def loss(model, p):
        return sum(jnp.sum(level**2) for level in model.apply({"params": p}, features).values())

    loss = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
    (fast_loss, fast_grads), (plain_loss, plain_grads) = loss(fast, params), loss(plain, params)
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-5)
    for fast_grad, plain_grad in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(plain_grads)):
        np.testing.assert_allclose(fast_grad, plain_grad, rtol=1e-4, atol=1e-4 * np.abs(plain_grad).max())


@pytest.mark.parametrize("min_level, max_level", [(2, 6), (3, 7), (4, 5)])
def test_levels_have_their_strides(min_level, max_level):
    image_size = 96  # C5 is 3x3: P6 is 2x2 (ceil), as a kernel-1 stride-2 max-pool gives
    model = FPN(out_channels=4, min_level=min_level, max_level=max_level)
    features = _features(size=image_size)
    pyramid = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), features)[0])
    assert sorted(pyramid) == [f"P{level}" for level in range(min_level, max_level + 1)]
    for level in range(min_level, max_level + 1):
        side = -(-image_size // 2**level)
        assert pyramid[f"P{level}"].shape == (2, side, side, 4)


def test_group_norm_fpn_has_bias_free_convs_and_runs():
    features = _features(channels={key: 32 for key in TINY_CHANNELS})
    model = FPN(out_channels=32, norm="group")
    pyramid, variables = jax.jit(lambda f: model.init_with_output(jax.random.key(0), f))(features)
    assert "bias" not in variables["params"]["lateral2"]
    assert set(variables["params"]["output2_norm"]) == {"scale", "bias"}
    # GroupNorm with unit scale and zero bias: every group has mean 0, variance ~1.
    groups = np.asarray(pyramid["P3"]).reshape(2, -1, 32, 1)
    np.testing.assert_allclose(groups.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(groups.var(axis=1), 1.0, atol=1e-3)


def test_features_below_min_level_are_not_needed():
    features = {k: v for k, v in _features().items() if k != "C2"}
    model = FPN(out_channels=4, min_level=3)
    pyramid = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), features)[0])
    assert sorted(pyramid) == ["P3", "P4", "P5", "P6"]


@pytest.mark.parametrize(
    "options, features, match",
    [
        (dict(), {k: v for k, v in _features().items() if k != "C3"}, "missing"),
        (dict(), {**_features(), "C4": jnp.zeros((2, 3, 2, 4))}, "twice"),
        (dict(), {**_features(), "C5": jnp.zeros((1, 1, 1, 5))}, "batch size"),
        (dict(min_level=1), _features(), "min_level"),
        (dict(max_level=4), _features(), "max_level"),
        (dict(norm="batch"), _features(), "norm"),
    ],
)
def test_bad_inputs_and_options_are_clear_errors(options, features, match):
    model = FPN(out_channels=4, **options)
    with pytest.raises(ValueError, match=match):
        model.init(jax.random.key(0), features)


@pytest.mark.parametrize("name, params", [("resnet18", 11_176_512), ("resnet50", 23_508_032)])
def test_resnet_fpn_gives_p2_to_p6_under_jit(name, params):
    # Traced under jit, not compiled: test_resnet runs the compiled ResNets.
    model = ResNetFPN(name, norm="frozen_batch")
    x = jnp.zeros((2, 64, 64, 3))
    init = jax.jit(lambda x: model.init_with_output(jax.random.key(0), x, train=False))
    pyramid, variables = jax.eval_shape(init, x)
    for level in range(2, 7):
        side = 64 // 2**level
        assert pyramid[f"P{level}"].shape == (2, side, side, 256)
        assert pyramid[f"P{level}"].dtype == jnp.float32
    assert set(variables["params"]) == {"resnet", "fpn"}
    assert sum(p.size for p in jax.tree.leaves(variables["params"]["resnet"])) == params
    widths = [64, 128, 256, 512] if name == "resnet18" else [256, 512, 1024, 2048]
    fpn = sum(c * 256 + 256 for c in widths) + 4 * (9 * 256 * 256 + 256)
    assert sum(p.size for p in jax.tree.leaves(variables["params"]["fpn"])) == fpn
