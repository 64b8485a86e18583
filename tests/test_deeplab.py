"""DeepLabv3+: shapes and strides, the dilated backbone against the undilated one, ASPP
against numpy, gradients, BatchNorm and dropout modes, the semantic task's calls and the
config schema."""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import deeplab_pets, deeplab_shapes
from jaxseg import registry, tasks
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError
from jaxseg.models import ResNet, deeplab
from jaxseg.models.deeplab import ASPP, DeepLabConfig, DeepLabV3Plus
from jaxseg.models.factory import create_model
from jaxseg.tasks.semantic import SemanticSegmentation
from tests.helpers.references import numpy_conv, random_variables

EPSILON = 1e-5
NUM_CLASSES = 5


def _tiny(**options):
    """Dilated ResNet-18 at width 8 (C5: 64 channels) with 16-channel heads: fast, every layer."""
    fields = dict(backbone="resnet18", backbone_width=8, aspp_channels=16, decoder_channels=16)
    return DeepLabV3Plus(NUM_CLASSES, **{**fields, **options})


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape).astype(np.float32))


def _labels(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(0, NUM_CLASSES, shape).astype(np.int32))


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("size", [(64, 64), (96, 96), (128, 128), (64, 96)])
def test_logits_cover_the_input_and_c5_has_the_output_stride(size, output_stride):
    model = _tiny(output_stride=output_stride)
    x = _images((2, *size, 3))
    apply = jax.jit(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    )
    logits, state = apply(random_variables(model, x), x)
    assert logits.shape == (2, *size, NUM_CLASSES)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    features = state["intermediates"]["backbone"]["__call__"][0]
    strides = {"C2": 4, "C3": 8, "C4": min(16, output_stride), "C5": output_stride}
    for level, stride in strides.items():
        assert features[level].shape[1:3] == (size[0] // stride, size[1] // stride), level
    assert features["C5"].shape[3] == 8 * 8


def test_output_stride_and_dtype_change_no_parameter_and_logits_stay_float32():
    x = jnp.zeros((1, 64, 64, 3))
    shapes = {}
    for output_stride, dtype in [(16, jnp.float32), (8, jnp.float32), (16, jnp.bfloat16)]:
        model = _tiny(output_stride=output_stride, dtype=dtype)
        logits, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False))
        assert logits.dtype == jnp.float32
        shapes[output_stride, dtype] = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), variables)
    assert shapes[16, jnp.float32] == shapes[8, jnp.float32] == shapes[16, jnp.bfloat16]


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize(
    "dilated, steps", [((False, False, True), (1, 1, 1, 2)), ((False, True, True), (1, 1, 2, 4))]
)
def test_dilated_resnet_is_the_undilated_one_on_its_coarser_grid(bottleneck, dilated, steps):
    # With per-pixel (eval-mode) norms, trading a stride for dilating every later 3x3 conv
    # computes the undilated features at every `step`-th pixel ("algorithme a trous"): wrong
    # or missing dilations, or wrong paddings, break the equality.
    options = dict(stage_sizes=(1, 2, 2, 2), bottleneck=bottleneck, num_filters=8, norm="batch")
    plain = ResNet(**options)
    atrous = ResNet(**options, replace_stride_with_dilation=dilated)
    x = _images((2, 64, 96, 3), seed=2)
    variables = random_variables(plain, x)
    assert jax.tree.structure(random_variables(atrous, x)) == jax.tree.structure(variables)
    expected = jax.jit(lambda v: plain.apply(v, x, train=False))(variables)
    features = jax.jit(lambda v: atrous.apply(v, x, train=False))(variables)
    for level, step in zip(("C2", "C3", "C4", "C5"), steps):
        assert features[level].shape[1:3] == tuple(step * n for n in expected[level].shape[1:3])
        np.testing.assert_allclose(
            features[level][:, ::step, ::step], expected[level], rtol=1e-4, atol=1e-4, err_msg=level
        )


def _conv_dilations(model, x):
    """The distinct `rhs_dilation`s of the convolutions in the model's eval-mode jaxpr."""
    variables = random_variables(model, x)
    text = str(jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables))
    return {int(a) for a, b in re.findall(r"rhs_dilation=\((\d+), (\d+)\)", text) if a == b}


@pytest.mark.parametrize(
    "output_stride, dilations", [(16, {1, 2, 6, 12, 18}), (8, {1, 2, 4, 12, 24, 36})]
)
def test_backbone_and_aspp_dilations_follow_the_output_stride(output_stride, dilations):
    # ResNet: res5 by 2 (stride 16); res4 by 2 and res5 by 4 (stride 8). ASPP: (6, 12, 18),
    # doubled at stride 8.
    model = _tiny(output_stride=output_stride, aspp_rates=(6, 12, 18))
    assert _conv_dilations(model, jnp.zeros((1, 64, 64, 3))) == dilations


def _norm_relu(y, params, stats):
    """Eval-mode BatchNorm of the running statistics, then ReLU (numpy)."""
    normed = (y - stats["mean"]) / np.sqrt(stats["var"] + EPSILON) * params["scale"] + params["bias"]
    return np.maximum(normed, 0.0)


def test_aspp_is_five_branches_and_matches_numpy():
    x = np.random.default_rng(3).normal(size=(2, 40, 44, 8)).astype(np.float32)
    rates, width = (6, 12, 18), 16
    module = ASPP(width, rates, "batch", dropout_rate=0.5, fast_cpu_ops=False, dtype=jnp.float32)
    variables = random_variables(module, x)
    y = module.apply(variables, x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    assert sorted(params) == ["branch0", "branch1", "branch2", "branch3", "pooling", "projection"]
    assert params["projection"]["conv"]["kernel"].shape == (1, 1, 5 * width, width)

    def branch(name, y):
        return _norm_relu(y, params[name]["norm"], stats[name]["norm"])

    kernels = {name: np.asarray(params[name]["conv"]["kernel"]) for name in params}
    branches = [branch("branch0", numpy_conv(x, kernels["branch0"]))]
    for index, rate in enumerate(rates, 1):
        name = f"branch{index}"
        branches.append(branch(name, numpy_conv(x, kernels[name], pad=rate, dilation=rate)))
    pooled = branch("pooling", x.mean(axis=(1, 2), keepdims=True) @ kernels["pooling"][0, 0])
    branches.append(np.broadcast_to(pooled, branches[0].shape))
    expected = branch("projection", numpy_conv(np.concatenate(branches, axis=-1), kernels["projection"]))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_every_parameter_gets_a_gradient(norm):
    model = _tiny(norm=norm, dropout_rate=0.1)
    x, labels = _images((2, 64, 64, 3), seed=5), _labels((2, 64, 64))
    variables = random_variables(model, x)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(6)},
        )
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))

    grads = jax.jit(jax.grad(loss))(variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, grad in flat if not np.any(np.asarray(grad) != 0)]
    # ResNet-18: stem and 16 convs with norms (3 leaves each), 3 shortcuts (3 each); ASPP: 6 x 3;
    # decoder: 3 convs with norms and the classifier's kernel and bias.
    assert len(flat) == (1 + 16 + 3) * 3 + 6 * 3 + 3 * 3 + 2
    assert dead == []


def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones():
    model = _tiny(dropout_rate=0.0)
    x = _images((2, 64, 64, 3), seed=7)
    variables = random_variables(model, x)
    shifted = {
        **variables,
        "batch_stats": jax.tree.map(lambda s: s + 0.5, variables["batch_stats"]),
    }
    train = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True
        )
    )
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["batch_stats"]))

    trained, state = train(variables, x)
    stem = np.asarray(state["intermediates"]["backbone"]["stem"]["conv"]["__call__"][0], np.float64)
    old = variables["batch_stats"]["backbone"]["stem"]["norm"]
    new = state["batch_stats"]["backbone"]["stem"]["norm"]
    np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * stem.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * stem.var(axis=(0, 1, 2)), atol=1e-5)
    # Training normalizes with the batch's statistics: the running ones do not matter ...
    np.testing.assert_allclose(train(shifted, x)[0], trained, atol=1e-5)
    # ... but the other images do, and no image's output depends on them in eval mode.
    assert not np.allclose(train(variables, x[:1])[0][0], trained[0], atol=1e-3)
    evaluated, kept = evaluate(variables, x)
    np.testing.assert_allclose(evaluate(variables, x[:1])[0][0], evaluated[0], atol=1e-5)
    assert not np.allclose(evaluate(shifted, x)[0], evaluated, atol=1e-3)
    assert jax.tree.all(jax.tree.map(np.array_equal, kept["batch_stats"], variables["batch_stats"]))


def test_dropout_needs_the_dropout_rng_in_training_only():
    model = _tiny(dropout_rate=0.5, norm="group")
    x = _images((2, 64, 64, 3), seed=8)
    variables = random_variables(model, x)
    train = jax.jit(lambda key: model.apply(variables, x, train=True, rngs={"dropout": key}))
    first, again, other = train(jax.random.key(0)), train(jax.random.key(0)), train(jax.random.key(1))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)
    evaluate = jax.jit(lambda: model.apply(variables, x, train=False))
    np.testing.assert_array_equal(evaluate(), evaluate())
    assert np.all(np.isfinite(first))


def _shapes_config():
    config = deeplab_shapes.get_config()
    config.model.backbone_width, config.model.aspp_channels, config.model.decoder_channels = 8, 16, 16
    return config


def test_the_semantic_task_runs_it_unchanged():
    # Found through the registry: the task's own init, loss and eval calls.
    config = _shapes_config()
    validate_config(config)
    task = tasks.task_for(config)
    assert isinstance(task, SemanticSegmentation) and isinstance(task.model, DeepLabV3Plus)
    variables = jax.jit(lambda key: task.init_variables(key, (64, 64, 3)))(jax.random.key(0))
    assert set(variables) == {"params", "batch_stats"}
    batch = {
        "image": _images((2, 64, 64, 3), seed=9),
        "semantic": _labels((2, 64, 64)) % config.data.num_classes,
        "valid": jnp.array([True, False]),
    }
    loss, components, stats = jax.jit(task.loss)(variables, batch, jax.random.key(1))
    assert loss.shape == () and np.isfinite(loss) and loss > 0
    assert set(components) == {"ce", "dice"}
    np.testing.assert_allclose(loss, components["ce"] + components["dice"], rtol=1e-6)
    assert jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])
    assert not jax.tree.all(jax.tree.map(np.array_equal, stats, variables["batch_stats"]))
    counts, predictions = jax.jit(task.eval_outputs)(variables, batch)
    assert predictions.shape == (2, 64, 64) and predictions.dtype == jnp.int32
    assert int(counts["confusion"].sum()) == 64 * 64  # the valid image's pixels only


@pytest.mark.parametrize(
    "module, num_classes, values",
    [
        (deeplab_shapes, 4, dict(backbone="resnet18", backbone_width=32, aspp_rates=(2, 4, 6),
                                 output_stride=16, dropout_rate=0.0, input_scale=1, stem_pool=False)),
        (deeplab_pets, 3, dict(backbone="resnet18", backbone_width=64, aspp_channels=256,
                               dropout_rate=0.1, stem_pool=True)),
    ],
)
def test_the_configs_are_valid_and_build_their_model(module, num_classes, values):
    config = module.get_config()
    validate_config(config)
    assert registry.MODELS.get(config.model.name).task == "semantic"
    model = create_model(config)
    assert isinstance(model, DeepLabV3Plus) and model.num_classes == num_classes
    for field, value in values.items():
        assert getattr(model, field) == value, field
    assert model.dtype == jnp.float32 and model.fast_cpu_ops is True


def test_config_schema_is_the_models_fields_and_defaults():
    model_fields = {
        field.name for field in dataclasses.fields(DeepLabV3Plus) if field.init
    } - {"num_classes", "parent", "name"}
    # Plus `pretrained`, read at initialization (tests/test_pretrained.py), not by the module.
    assert {field.name for field in dataclasses.fields(DeepLabConfig)} == model_fields | {"pretrained"}
    defaults = DeepLabConfig()
    for field in model_fields:
        assert getattr(defaults, field) == getattr(DeepLabV3Plus(7), field), field
    assert defaults.pretrained is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.output_stride = 8


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("output_stride", 12, "must be 8 or 16."),
        ("output_stride", True, "must be 8 or 16."),
        ("backbone", "resnet20", "is not one of resnet18, resnet34, resnet50, resnet101."),
        ("backbone_width", 0, "must be an integer >= 1."),
        ("aspp_rates", (6, 0, 18), "must be a non-empty tuple of positive ints."),
        ("aspp_rates", (), "must be a non-empty tuple of positive ints."),
        ("aspp_channels", 2.5, "must be an integer >= 1."),
        ("decoder_channels", -1, "must be an integer >= 1."),
        ("norm", "frozen_batch", "is not one of batch, group."),
        ("dropout_rate", 1.0, "must be a number in [0, 1)."),
        ("dropout_rate", "0.1", "must be a number in [0, 1)."),
        ("dtype", "float16", "is not one of float32, bfloat16."),
        ("fast_cpu_ops", 1, "must be True or False."),
    ],
)
def test_a_bad_field_is_one_line_naming_it(field, value, message):
    config = _shapes_config()
    with config.model.ignore_type():
        config.model[field] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value) == f"config.model.{field}={value!r} {message}"


def test_unknown_keys_and_image_sizes_the_stride_does_not_divide():
    config = _shapes_config()
    config.model.aspp_rate = (1, 2, 3)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value) == (
        "config.model.aspp_rate is not a field of DeepLabV3PlusConfig (did you mean 'aspp_rates'?)."
    )
    config = _shapes_config()
    config.model.output_stride, config.model.input_scale = 16, 1
    config.data.image_size = 120
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value) == (
        "config.data.image_size=120 must be divisible by config.model.output_stride=16."
    )
    config.model.output_stride = 8
    config.model.aspp_rates = [1, 2]  # a list (from an override) is a tuple
    assert create_model(config).aspp_rates == (1, 2)


@pytest.mark.parametrize("channels, groups", [(256, 32), (48, 16), (32, 16), (16, 8), (2, 1), (3, 1), (1, 1)])
def test_pooling_group_norm_keeps_two_channels_per_group(channels, groups):
    assert deeplab.pooled_group_count(channels) == groups


@pytest.mark.parametrize(
    "options, match",
    [(dict(output_stride=32), "output_stride"), (dict(aspp_rates=()), "aspp_rates"), (dict(norm="layer"), "norm")],
)
def test_bad_module_fields_are_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda: _tiny(**options).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))


def test_input_scale_runs_the_network_on_the_upsampled_images():
    """With input_scale 2 the backbone sees the bilinearly doubled images (C2 at half the
    input's size) and the logits come back at the input's size; same parameters."""
    x = _images((1, 32, 48, 3), seed=4)
    scaled, plain = _tiny(input_scale=2), _tiny()
    variables = random_variables(plain, x)
    apply = jax.jit(
        lambda model, v, x: model.apply(
            v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
        ),
        static_argnums=0,
    )
    logits, state = apply(scaled, variables, x)
    assert logits.shape == (1, 32, 48, NUM_CLASSES)
    features = state["intermediates"]["backbone"]["__call__"][0]
    assert features["C2"].shape[1:3] == (16, 24)
    # The backbone's input is the resized image: the same as the plain model on it.
    doubled = jax.image.resize(x, (1, 64, 96, 3), method="bilinear")
    _, plain_state = apply(plain, variables, doubled)
    np.testing.assert_allclose(
        features["C5"], plain_state["intermediates"]["backbone"]["__call__"][0]["C5"], atol=1e-5
    )
    config = _shapes_config()
    config.model.output_stride, config.model.input_scale = 16, 2
    config.data.image_size = 100
    with pytest.raises(ConfigError, match=r"image_size=100 x config.model.input_scale=2 must"):
        validate_config(config)
    config.data.image_size = 120  # 240 is divisible by 16, 120 is not
    validate_config(config)


@pytest.mark.parametrize(
    "output_stride, strides, dilated",
    [(16, (2, 4, 8, 16), (False, False, False)), (8, (2, 4, 8, 8), (False, False, True))],
)
def test_without_the_stem_pool_the_levels_double_and_the_decoder_fuses_c3(output_stride, strides, dilated):
    """stem_pool=False: C2..C5 at strides 2, 4, 8, 16 (res5 dilated at output stride 8), the
    skip reads C3 (stride 4, 16 channels at width 8), the logits cover the input."""
    assert deeplab.dilated_stages(output_stride, stem_pool=False) == dilated
    assert deeplab.dilated_stages(output_stride, stem_pool=True) == (
        (False, False, True) if output_stride == 16 else (False, True, True)
    )
    assert deeplab.decoder_level(True) == "C2" and deeplab.decoder_level(False) == "C3"
    model = _tiny(output_stride=output_stride, stem_pool=False)
    x = _images((2, 64, 96, 3), seed=5)
    variables = random_variables(model, x)
    logits, state = jax.jit(
        lambda v: model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    )(variables)
    assert logits.shape == (2, 64, 96, NUM_CLASSES) and np.all(np.isfinite(logits))
    features = state["intermediates"]["backbone"]["__call__"][0]
    for level, stride in zip(("C2", "C3", "C4", "C5"), strides):
        assert features[level].shape[1:3] == (64 // stride, 96 // stride), level
    assert variables["params"]["decoder"]["skip"]["conv"]["kernel"].shape == (1, 1, 16, 48)
    pooled = random_variables(_tiny(output_stride=output_stride), x)
    assert pooled["params"]["decoder"]["skip"]["conv"]["kernel"].shape == (1, 1, 8, 48)
    assert jax.tree.structure(pooled) == jax.tree.structure(variables)
