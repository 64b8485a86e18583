"""U-Net: shapes, options, BatchNorm modes, parameter count, fast ops equivalence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxseg.models import UNet
from jaxseg.models.unet import required_divisor
from jaxseg.ops.flat_key import flat_key

TINY = (4, 8, 16)


def _images(shape=(2, 32, 32, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _init(model, x):
    return model.init(flat_key(jax.random.key(0)), x, train=False)


@pytest.mark.parametrize(
    "features, size",
    [((4,), (8, 8)), ((4, 8), (16, 24)), (TINY, (32, 32)), ((4, 8, 16, 32), (32, 48))],
)
def test_logits_have_full_input_size(features, size):
    model = UNet(5, features=features)
    x = jnp.zeros((2, *size, 3))
    variables = jax.eval_shape(lambda: _init(model, x))
    logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert logits.shape == (2, *size, 5)
    assert logits.dtype == jnp.float32


def test_image_size_not_divisible_is_a_clear_error():
    assert required_divisor(TINY) == 4
    assert required_divisor((64, 128, 256, 512, 1024)) == 16
    model = UNet(2, features=TINY)
    with pytest.raises(ValueError, match="30x32"):
        _init(model, jnp.zeros((1, 30, 32, 3)))
    with pytest.raises(ValueError, match="features"):
        required_divisor(())


@pytest.mark.parametrize(
    "option, value", [("norm", "layer"), ("upsample", "nearest"), ("dropout_rate", 1.0)]
)
def test_bad_options_are_clear_errors(option, value):
    model = UNet(2, features=TINY, **{option: value})
    with pytest.raises(ValueError, match=option):
        _init(model, jnp.zeros((1, 32, 32, 3)))


def test_classic_unet_parameter_count():
    # Ronneberger et al. (2015), Fig. 1: 3x3 convs with bias, 2x2 up-convs
    # halving the channels, 1x1 head; input RGB, 2 classes.
    def conv3(cin, cout):
        return 9 * cin * cout + cout

    def upconv(cin, cout):
        return 4 * cin * cout + cout

    encoder = (
        conv3(3, 64) + conv3(64, 64) + conv3(64, 128) + conv3(128, 128)
        + conv3(128, 256) + conv3(256, 256) + conv3(256, 512) + conv3(512, 512)
        + conv3(512, 1024) + conv3(1024, 1024)
    )
    decoder = (
        upconv(1024, 512) + conv3(1024, 512) + conv3(512, 512)
        + upconv(512, 256) + conv3(512, 256) + conv3(256, 256)
        + upconv(256, 128) + conv3(256, 128) + conv3(128, 128)
        + upconv(128, 64) + conv3(128, 64) + conv3(64, 64)
    )
    head = 64 * 2 + 2
    model = UNet(2, norm="none")
    x = jnp.zeros((1, 16, 16, 3))
    params = jax.eval_shape(lambda: _init(model, x))["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == encoder + decoder + head == 31_031_810


def test_batch_norm_updates_statistics_in_train_only():
    model = UNet(3, features=TINY)
    x = _images()
    variables = _init(model, x)
    _, train_updates = model.apply(variables, x, train=True, mutable=["batch_stats"])

    # The first BatchNorm sees the bias-free first conv of the input.
    kernel = variables["params"]["down0"]["conv0"]["conv"]["kernel"]
    conv_out = np.asarray(
        lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ).astype(np.float64)
    stats = train_updates["batch_stats"]["down0"]["conv0"]["norm"]
    np.testing.assert_allclose(stats["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        stats["var"], 0.9 + 0.1 * conv_out.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )

    _, eval_updates = model.apply(variables, x, train=False, mutable=["batch_stats"])
    for got, initial in zip(jax.tree.leaves(eval_updates), jax.tree.leaves(variables["batch_stats"])):
        np.testing.assert_array_equal(got, initial)

    # Eval normalises with running averages, so a sample's logits do not depend on the batch.
    trained = {"params": variables["params"], **train_updates}
    alone = model.apply(trained, x[:1], train=False)
    np.testing.assert_allclose(alone, model.apply(trained, x, train=False)[:1], rtol=1e-5, atol=1e-5)
    in_train_alone, _ = model.apply(trained, x[:1], train=True, mutable=["batch_stats"])
    in_train_batch, _ = model.apply(trained, x, train=True, mutable=["batch_stats"])
    assert np.abs(in_train_alone - in_train_batch[:1]).max() > 1e-3


@pytest.mark.parametrize(
    "options",
    [dict(norm="group"), dict(norm="none"), dict(upsample="bilinear"), dict(skip_connections=False)],
)
def test_variants_run(options):
    model = UNet(3, features=TINY, **options)
    x = _images()
    variables = _init(model, x)
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 32, 32, 3)
    assert np.isfinite(np.asarray(logits)).all()


def test_skip_connections_off_gives_decoder_no_encoder_features():
    x = jnp.zeros((1, 32, 32, 3))
    with_skips = _init(UNet(3, features=TINY), x)["params"]
    without = _init(UNet(3, features=TINY, skip_connections=False), x)["params"]
    assert with_skips["decode0"]["conv0"]["conv"]["kernel"].shape == (3, 3, 8, 4)
    assert without["decode0"]["conv0"]["conv"]["kernel"].shape == (3, 3, 4, 4)


def test_dropout_active_in_train_only():
    model = UNet(3, features=TINY, dropout_rate=0.5, norm="none")
    x = _images()
    variables = _init(model, x)
    runs = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(s)}) for s in (1, 2)]
    assert np.abs(runs[0] - runs[1]).max() > 1e-6
    np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))


def test_bfloat16_computation_keeps_float32_params_and_logits():
    model = UNet(3, features=TINY, dtype=jnp.bfloat16)
    x = _images()
    variables = _init(model, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.dtype == jnp.float32
    full = UNet(3, features=TINY).apply(variables, x, train=True, mutable=["batch_stats"])[0]
    assert np.abs(logits - full).max() < 0.1 * np.abs(full).max()


def _loss_and_grads(model, variables, x):
    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(logits * jnp.cos(logits))

    return jax.value_and_grad(loss)(variables["params"])


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_fast_cpu_ops_match_plain_ops(upsample):
    plain = UNet(3, features=TINY, upsample=upsample)
    fast = UNet(3, features=TINY, upsample=upsample, fast_cpu_ops=True)
    x = _images()
    variables = _init(plain, x)
    assert jax.tree.map(jnp.shape, _init(fast, x)) == jax.tree.map(jnp.shape, variables)

    np.testing.assert_allclose(
        fast.apply(variables, x, train=False), plain.apply(variables, x, train=False), rtol=1e-4, atol=1e-4
    )
    loss_plain, grads_plain = _loss_and_grads(plain, variables, x)
    loss_fast, grads_fast = _loss_and_grads(fast, variables, x)
    np.testing.assert_allclose(loss_fast, loss_plain, rtol=1e-4)
    for got, expected in zip(jax.tree.leaves(grads_fast), jax.tree.leaves(grads_plain)):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)
