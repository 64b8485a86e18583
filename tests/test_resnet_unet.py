"""ResNet U-Net: shapes, the encoder against a standalone ResNet, a decoder block and
`normalize_pixels` against numpy, frozen stages, ImageNet files at initialization, the
semantic task's calls and the config schema, including the normalization rule of
`pretrained`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import deeplab_shapes, unet_resnet_shapes
from jaxseg import tasks
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError
from jaxseg.models import build_resnet, layers
from jaxseg.models.factory import create_model
from jaxseg.models.resnet_unet import DecoderBlock, ResNetUNet
from jaxseg.tasks.semantic import SemanticSegmentation
from tests.helpers.references import numpy_conv, random_variables
from tests.test_pretrained import initial_state_from_file, torchvision_state_dict, write

EPSILON = 1e-5
NUM_CLASSES = 5
MEAN, STD = (0.3, 0.5, 0.7), (0.2, 0.25, 0.5)


def _tiny(**options):
    """ResNet-18 at width 8 (C5: 64 channels) with a narrow decoder."""
    fields = dict(backbone="resnet18", backbone_width=8, decoder_channels=(16, 12, 8, 8, 4))
    return ResNetUNet(NUM_CLASSES, **{**fields, **options})


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape).astype(np.float32))


def test_normalize_pixels_is_per_channel_standardization():
    images = np.random.default_rng(2).uniform(size=(2, 3, 5, 3)).astype(np.float32)
    got = layers.normalize_pixels(jnp.asarray(images), layers.IMAGENET_MEAN, layers.IMAGENET_STD)
    assert got.shape == images.shape and got.dtype == jnp.float32
    expected = (images.astype(np.float64) - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    identity = layers.normalize_pixels(jnp.asarray(images), layers.IDENTITY_MEAN, layers.IDENTITY_STD)
    np.testing.assert_array_equal(identity, images)


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_logits_are_float32_at_the_input_size_and_the_encoder_is_the_resnet(size):
    model = _tiny(pixel_mean=MEAN, pixel_std=STD)
    x = _images((2, *size, 3))
    variables = random_variables(model, x)
    apply = jax.jit(lambda v, x: model.apply(
        v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    ))
    logits, state = apply(variables, x)
    assert logits.shape == (2, *size, NUM_CLASSES) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    # The reference: the ResNet alone, with the backbone's variables, on numpy-normalized images.
    resnet = build_resnet("resnet18", num_filters=8, norm="batch")
    backbone = {collection: tree["backbone"] for collection, tree in variables.items()}
    normalized = (np.asarray(x, np.float64) - np.array(MEAN)) / np.array(STD)
    expected = resnet.apply(backbone, jnp.asarray(normalized, jnp.float32), train=False)
    features = state["intermediates"]["backbone"]["__call__"][0]
    for level, stride, channels in (("C2", 4, 8), ("C3", 8, 16), ("C4", 16, 32), ("C5", 32, 64)):
        assert features[level].shape == (2, size[0] // stride, size[1] // stride, channels)
        np.testing.assert_allclose(features[level], expected[level], rtol=1e-5, atol=1e-5)
    # The head is a 1x1 conv with bias of the last decoder block's output.
    last = state["intermediates"]["decoder4"]["__call__"][0]
    head = variables["params"]["head"]
    expected_logits = np.einsum("nhwc,ck->nhwk", np.asarray(last), np.asarray(head["kernel"][0, 0]))
    np.testing.assert_allclose(logits, expected_logits + np.asarray(head["bias"]), rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_the_parameters_and_float32_logits():
    x = jnp.zeros((1, 64, 64, 3))
    f32 = jax.eval_shape(lambda: _tiny().init(jax.random.key(0), x, train=False))
    bf16_model = _tiny(dtype=jnp.bfloat16)
    bf16 = jax.eval_shape(lambda: bf16_model.init(jax.random.key(0), x, train=False))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), f32) == jax.tree.map(
        lambda a: (a.shape, a.dtype), bf16
    )
    logits = jax.eval_shape(lambda v: bf16_model.apply(v, x, train=False), bf16)
    assert logits.shape == (1, 64, 64, NUM_CLASSES) and logits.dtype == jnp.float32


def _numpy_upsample_2x(x):
    """Bilinear 2x with half-pixel centres (source (i + 0.5) / 2 - 0.5, edges clamped)."""
    def along(x, axis):
        n = x.shape[axis]
        source = (np.arange(2 * n) + 0.5) / 2 - 0.5
        low = np.floor(source).astype(int)
        frac = source - low
        lo, hi = np.clip(low, 0, n - 1), np.clip(low + 1, 0, n - 1)
        shape = [1] * x.ndim
        shape[axis] = 2 * n
        frac = frac.reshape(shape)
        return np.take(x, lo, axis) * (1 - frac) + np.take(x, hi, axis) * frac
    return along(along(np.asarray(x, np.float64), 1), 2)


def test_decoder_block_is_upsample_concat_and_two_conv_norm_relus():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 4, 6, 8)).astype(np.float32))
    skip = jnp.asarray(rng.normal(size=(2, 8, 12, 4)).astype(np.float32))
    block = DecoderBlock(6, "batch", False, jnp.float32)
    variables = random_variables(block, x, skip=skip)
    got = block.apply(variables, x, skip, train=False)
    y = np.concatenate([_numpy_upsample_2x(x), np.asarray(skip, np.float64)], axis=-1)
    as_numpy = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    for name in ("conv0", "conv1"):
        params, stats = as_numpy["params"][name], as_numpy["batch_stats"][name]["norm"]
        y = numpy_conv(y, params["conv"]["kernel"], pad=1)
        y = (y - stats["mean"]) / np.sqrt(stats["var"] + EPSILON) * params["norm"]["scale"]
        y = np.maximum(y + params["norm"]["bias"], 0.0)
    assert got.shape == (2, 8, 12, 6)
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)
    # Without a skip the block only upsamples and convolves.
    assert block.apply(random_variables(block, x, skip=None), x, None, train=False).shape == (2, 8, 12, 6)


def test_freeze_at_stops_the_backbones_gradients_only():
    model = _tiny(freeze_at=5)
    x = _images((2, 64, 64, 3))
    variables = random_variables(model, x)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean(logits**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(not np.any(g) for g in jax.tree.leaves(grads["backbone"]))
    decoder = {name: tree for name, tree in grads.items() if name != "backbone"}
    assert all(np.any(g) for g in jax.tree.leaves(decoder))


def _shapes_config(**model):
    config = unet_resnet_shapes.get_config()
    config.data.image_size = 32
    config.model.update({"backbone_width": 8, "decoder_channels": (8, 8, 8, 8, 4), **model})
    return config


def test_the_config_is_valid_and_the_semantic_task_runs_it():
    config = unet_resnet_shapes.get_config()
    validate_config(config)
    model = create_model(config)
    assert isinstance(model, ResNetUNet) and model.num_classes == 4
    assert (model.backbone, model.backbone_width, model.backbone_norm) == ("resnet18", 32, "batch")
    assert model.pixel_mean == layers.IMAGENET_MEAN and model.fast_cpu_ops is True
    config = _shapes_config()
    task = tasks.task_for(config)
    assert isinstance(task, SemanticSegmentation) and isinstance(task.model, ResNetUNet)
    variables = jax.jit(lambda key: task.init_variables(key, (32, 32, 3)))(jax.random.key(0))
    assert set(variables) == {"params", "batch_stats"}
    batch = {
        "image": _images((2, 32, 32, 3), seed=9),
        "semantic": jnp.asarray(np.random.default_rng(1).integers(0, 4, (2, 32, 32)), jnp.int32),
        "valid": jnp.array([True, False]),
    }
    loss, components, stats = jax.jit(task.loss)(variables, batch, jax.random.key(1))
    assert np.isfinite(loss) and loss > 0
    np.testing.assert_allclose(loss, components["ce"] + components["dice"], rtol=1e-6)
    assert not jax.tree.all(jax.tree.map(np.array_equal, stats, variables["batch_stats"]))
    counts, predictions = jax.jit(task.eval_outputs)(variables, batch)
    assert predictions.shape == (2, 32, 32) and predictions.dtype == jnp.int32
    assert int(counts["confusion"].sum()) == 32 * 32


def test_pretrained_file_is_the_backbone_of_the_initial_state(tmp_path):
    state_dict = torchvision_state_dict("resnet18", seed=3)
    path = write(str(tmp_path), "resnet18.safetensors", state_dict)
    config = _shapes_config(backbone_width=64, pretrained=path)
    state, _ = initial_state_from_file(config, path)
    # Against the file itself: torch's OIHW kernels are Flax's HWIO, BatchNorm's buffers its stats.
    stem = state.params["backbone"]["stem"]
    np.testing.assert_array_equal(stem["conv"]["kernel"], state_dict["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stem["norm"]["scale"], state_dict["bn1.weight"])
    stats = state.batch_stats["backbone"]["res5_1"]["conv2"]["norm"]
    np.testing.assert_array_equal(stats["var"], state_dict["layer4.1.bn2.running_var"])
    assert {f"decoder{index}" for index in range(5)} | {"head"} <= set(state.params)


def _config_error(config):
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


def test_pretrained_files_need_imagenet_normalization(tmp_path):
    path = write(str(tmp_path), "resnet18.safetensors", torchvision_state_dict("resnet18"))
    identity = dict(pixel_mean=layers.IDENTITY_MEAN, pixel_std=layers.IDENTITY_STD)
    message = (
        "config.model.pixel_mean=(0.0, 0.0, 0.0) and config.model.pixel_std=(1.0, 1.0, 1.0) "
        f"leave the images unnormalized, but config.model.pretrained={path!r} expects "
        "ImageNet's normalization: set them to (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225)."
    )
    assert _config_error(_shapes_config(backbone_width=64, pretrained=path, **identity)) == message
    # DeepLabv3+ keeps the identity by default, so its pretrained configs must set them.
    config = deeplab_shapes.get_config()
    config.model.update(backbone_width=64, pretrained=path)
    assert _config_error(config) == message
    config.model.update(pixel_mean=layers.IMAGENET_MEAN, pixel_std=layers.IMAGENET_STD)
    validate_config(config)
    # Without a file, any normalization goes.
    validate_config(_shapes_config(**identity))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("decoder_channels", (8, 8, 8, 8), "must give 5 widths, one per decoder block (strides 16, 8, 4, 2, 1)."),
        ("decoder_channels", (8, 0, 8, 8, 4), "must be a non-empty tuple of positive ints."),
        ("decoder_norm", "frozen_batch", "is not one of batch, group."),
        ("backbone_norm", "layer", "is not one of frozen_batch, batch, group."),
        ("freeze_at", 6, "is not one of 0, 1, 2, 3, 4, 5."),
        ("pixel_std", (0.2, 0.0, 0.2), "must be 3 numbers > 0, one per RGB channel."),
        ("pixel_mean", (0.5, 0.5), "must be 3 numbers in [0, 1], one per RGB channel."),
    ],
)
def test_a_bad_field_is_one_line_naming_it(field, value, message):
    config = _shapes_config()
    with config.model.ignore_type():
        config.model[field] = value
    assert _config_error(config) == f"config.model.{field}={value!r} {message}"


def test_image_sizes_must_be_multiples_of_32():
    config = _shapes_config()
    config.data.image_size = 48
    assert _config_error(config) == (
        "config.data.image_size=48 must be divisible by 32, the stride of the ResNet "
        "encoder's C5 (config.model.backbone='resnet18')."
    )
