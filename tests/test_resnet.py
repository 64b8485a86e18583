"""ResNet backbone: shapes, parameter counts, norms, freezing, paddings vs numpy."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import ResNet, build_resnet
from jaxseg.models.norms import FrozenBatchNorm
from jaxseg.models.resnet import ConvNorm, max_pool_3x3_stride2, pointwise_conv
from jaxseg.ops.flat_key import flat_key
from tests.helpers.references import numpy_conv, random_variables

STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}


def _images(shape=(2, 64, 64, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _init(model, x):
    return model.init(flat_key(jax.random.key(0)), x, train=False)


def _count(tree):
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def _tiny_resnet(**options):
    """One BasicBlock per stage, widths 32..256: fast, with every kind of layer."""
    return ResNet(stage_sizes=(1, 1, 1, 1), bottleneck=False, num_filters=32, **options)


@pytest.mark.parametrize(
    "name, channels", [("resnet18", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048))]
)
def test_features_have_strides_and_channels_under_jit(name, channels):
    model = build_resnet(name)
    x = _images()
    features = jax.jit(lambda v, x: model.apply(v, x, train=False))(random_variables(model, x), x)
    assert sorted(features) == ["C2", "C3", "C4", "C5"]
    for (key, stride), width in zip(STRIDES.items(), channels):
        assert features[key].shape == (2, 64 // stride, 64 // stride, width)
        assert features[key].dtype == jnp.float32
        assert np.all(np.isfinite(features[key]))
    assert model.out_channels == dict(zip(STRIDES, channels))


def _resnet_params(stage_sizes, bottleneck):
    """Hand count: bias-free convs, 2 parameters per channel per norm, no fc head."""

    def conv_norm(cin, cout, k):
        return k * k * cin * cout + 2 * cout

    total = conv_norm(3, 64, 7)
    cin = 64
    for index, blocks in enumerate(stage_sizes):
        width = 64 * 2**index
        cout = 4 * width if bottleneck else width
        for block in range(blocks):
            if bottleneck:
                total += conv_norm(cin, width, 1) + conv_norm(width, width, 3) + conv_norm(width, cout, 1)
            else:
                total += conv_norm(cin, width, 3) + conv_norm(width, width, 3)
            if block == 0 and (index > 0 or cin != cout):
                total += conv_norm(cin, cout, 1)
            cin = cout
    return total


@pytest.mark.parametrize(
    "name, torchvision_total, fc",
    [
        ("resnet18", 11_689_512, 512 * 1000 + 1000),
        ("resnet34", 21_797_672, 512 * 1000 + 1000),
        ("resnet50", 25_557_032, 2048 * 1000 + 1000),
        ("resnet101", 44_549_160, 2048 * 1000 + 1000),
    ],
)
@pytest.mark.parametrize("norm", ["frozen_batch", "batch", "group"])
def test_parameter_count_is_torchvision_without_fc(name, torchvision_total, fc, norm):
    # torchvision counts BatchNorm weight and bias as parameters and its
    # running statistics as buffers; every norm here has the same 2 per channel.
    model = build_resnet(name, norm=norm)
    variables = jax.eval_shape(lambda: _init(model, jnp.zeros((1, 32, 32, 3))))
    stage_sizes, bottleneck = model.stage_sizes, model.bottleneck
    assert _count(variables["params"]) == _resnet_params(stage_sizes, bottleneck) == torchvision_total - fc
    norm_channels = _count(variables["params"]) - _count(
        {k: v for k, v in flax.traverse_util.flatten_dict(variables["params"]).items() if k[-1] == "kernel"}
    )
    if norm == "group":
        assert "batch_stats" not in variables
    else:
        assert _count(variables["batch_stats"]) == norm_channels  # mean and var per channel


def test_frozen_batch_norm_is_the_affine_map_of_its_stored_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    variables = {
        "params": {"scale": rng.normal(size=4), "bias": rng.normal(size=4)},
        "batch_stats": {"mean": rng.normal(size=4), "var": rng.uniform(0.5, 2.0, 4)},
    }
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
    y, updates = FrozenBatchNorm().apply(variables, x, mutable=["batch_stats"])
    p, s = variables["params"], variables["batch_stats"]
    expected = (x - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], s)


def _train_and_eval(norm):
    model = _tiny_resnet(norm=norm)
    x = _images((2, 32, 32, 3))
    variables = random_variables(model, x)
    trained, updates = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
    evaluated = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    return variables["batch_stats"], updates["batch_stats"], trained, evaluated


def test_frozen_batch_resnet_ignores_train_and_keeps_its_statistics():
    stats, new_stats, trained, evaluated = _train_and_eval("frozen_batch")
    jax.tree.map(np.testing.assert_array_equal, new_stats, stats)
    jax.tree.map(np.testing.assert_array_equal, trained, evaluated)


def test_batch_norm_resnet_uses_and_updates_batch_statistics():
    stats, new_stats, trained, evaluated = _train_and_eval("batch")
    mean = new_stats["stem"]["norm"]["mean"]
    assert not np.allclose(mean, stats["stem"]["norm"]["mean"])
    assert not np.allclose(trained["C5"], evaluated["C5"])


def test_group_norm_resnet_runs_without_batch_stats():
    model = _tiny_resnet(norm="group")
    x = _images((2, 32, 32, 3))
    variables = random_variables(model, x)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=True))
    features = apply(variables, x)
    assert set(variables) == {"params"}
    assert features["C5"].shape == (2, 1, 1, 256)
    assert np.all(np.isfinite(features["C5"]))
    # GroupNorm statistics are per image: the second image's features do not
    # depend on the first one.
    alone = apply(variables, x[1:])
    np.testing.assert_allclose(features["C3"][1], alone["C3"][0], rtol=1e-4, atol=1e-4)


def test_group_norm_uses_gcd_groups_on_narrow_widths():
    x = _images((1, 32, 32, 3))
    model = ConvNorm(12, 3, 1, "group", relu=False, fast_cpu_ops=False, dtype=jnp.float32)
    variables = random_variables(model, x)
    y = np.asarray(model.apply(variables, x, train=True))
    p = variables["params"]
    conv = numpy_conv(np.asarray(x), np.asarray(p["conv"]["kernel"]), 1, 1)
    groups = conv.reshape(1, 32 * 32, 4, 3)  # gcd(32, 12) = 4 groups of 3 channels
    mean = groups.mean(axis=(1, 3), keepdims=True)
    var = groups.var(axis=(1, 3), keepdims=True)
    expected = ((groups - mean) / np.sqrt(var + 1e-5)).reshape(conv.shape) * p["norm"]["scale"] + p["norm"]["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("freeze_at, frozen", [(0, []), (1, ["stem"]), (2, ["stem", "res2"])])
def test_freeze_at_zeroes_gradients_of_frozen_stages_only(freeze_at, frozen):
    model = _tiny_resnet(norm="group", freeze_at=freeze_at)
    x = _images((1, 32, 32, 3))
    params = random_variables(model, x)["params"]

    def loss(p):
        features = model.apply({"params": p}, x, train=True)
        return sum(jnp.sum(f**2) for f in features.values())

    grads = flax.traverse_util.flatten_dict(jax.jit(jax.grad(loss))(params))
    for path, grad in grads.items():
        stage = path[0].split("_")[0]
        assert (np.abs(grad).max() == 0) == (stage in frozen), path


@pytest.mark.parametrize("size", [(60, 64), (64, 48), (0, 32)])
def test_image_size_not_divisible_by_32_is_a_clear_error(size):
    model = build_resnet("resnet18")
    label = f"{size[0]}x{size[1]}"
    with pytest.raises(ValueError, match=f"image size {label}"):
        _init(model, jnp.zeros((1, *size, 3)))


@pytest.mark.parametrize("dilated, stride", [((False, False, True), 16), ((False, True, True), 8)])
def test_dilated_resnet_needs_sizes_divisible_by_its_c5_stride(dilated, stride):
    model = build_resnet("resnet18", replace_stride_with_dilation=dilated)
    x = jnp.zeros((1, stride, 2 * stride, 3))
    features, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False))
    assert features["C5"].shape[1:3] == (1, 2)
    with pytest.raises(ValueError, match=f"divisible by {stride} "):
        _init(model, jnp.zeros((1, stride + 4, stride, 3)))


@pytest.mark.parametrize(
    "dilated, strides", [((False, False, False), (2, 4, 8, 16)), ((False, False, True), (2, 4, 8, 8))]
)
def test_without_the_stem_pool_every_level_has_twice_the_resolution(dilated, strides):
    """stem_pool=False: C2..C5 at strides 2, 4, 8, 16 (res5 dilated: 8), the same parameters,
    and sizes divisible by the C5 stride."""
    model = build_resnet("resnet18", num_filters=8, stem_pool=False, replace_stride_with_dilation=dilated)
    x = jnp.zeros((1, 32, 64, 3))
    features, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False))
    for level, stride in zip(("C2", "C3", "C4", "C5"), strides):
        assert features[level].shape == (1, 32 // stride, 64 // stride, 8 * 2 ** (int(level[1]) - 2)), level
    pooled = jax.eval_shape(lambda: build_resnet("resnet18", num_filters=8).init(jax.random.key(0), x, train=False))
    assert jax.tree.map(lambda leaf: leaf.shape, pooled) == jax.tree.map(lambda leaf: leaf.shape, variables)
    with pytest.raises(ValueError, match=f"divisible by {strides[-1]} "):
        _init(model, jnp.zeros((1, strides[-1] + 4, strides[-1], 3)))


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(norm="layer"), "norm"),
        (dict(freeze_at=6), "freeze_at"),
        (dict(stage_sizes=(2, 2, 2)), "stage_sizes"),
        (dict(num_filters=0), "num_filters"),
        (dict(replace_stride_with_dilation=(False, True)), "replace_stride_with_dilation"),
        (dict(replace_stride_with_dilation=(0, 0, 1)), "replace_stride_with_dilation"),
    ],
)
def test_bad_options_are_clear_errors(options, match):
    model = ResNet(**{"stage_sizes": (1, 1, 1, 1), "bottleneck": False, **options})
    with pytest.raises(ValueError, match=match):
        _init(model, jnp.zeros((1, 32, 32, 3)))


def test_bad_name_and_rank_are_clear_errors():
    with pytest.raises(ValueError, match="resnet_name"):
        build_resnet("resnet20")
    with pytest.raises(ValueError, match="rank 4"):
        _init(build_resnet("resnet18"), jnp.zeros((32, 32, 3)))


def _numpy_max_pool_3x3_stride2(x):
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    n, h, w, c = x.shape
    out = np.zeros((n, h // 2, w // 2, c))
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, i, j] = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    "kernel_size, stride, dilation, fast_cpu_ops",
    [
        (7, 2, 1, False),
        (3, 2, 1, False),
        (3, 1, 1, False),
        (1, 2, 1, False),
        (3, 1, 2, False),
        (3, 1, 3, True),
    ],
)
def test_conv_norm_pads_symmetrically_like_torchvision(kernel_size, stride, dilation, fast_cpu_ops):
    x = _images((2, 8, 10, 3), seed=2)
    module = ConvNorm(4, kernel_size, stride, "frozen_batch", True, fast_cpu_ops, jnp.float32, dilation)
    variables = random_variables(module, x)
    y = module.apply(variables, x, train=False)
    assert y.shape[1:3] == (-(-8 // stride), -(-10 // stride))
    p, s = variables["params"], variables["batch_stats"]["norm"]
    kernel = np.asarray(p["conv"]["kernel"])
    conv = numpy_conv(np.asarray(x), kernel, stride, dilation * (kernel_size // 2), dilation)
    normed = (conv - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
    np.testing.assert_allclose(y, np.maximum(normed, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fast_cpu_ops", [False, True])
def test_stem_max_pool_pads_with_minus_infinity(fast_cpu_ops):
    x = -np.abs(np.asarray(_images((2, 8, 6, 3), seed=3))) - 1.0  # all negative: zero padding would show
    pooled = max_pool_3x3_stride2(jnp.asarray(x), fast_cpu_ops)
    np.testing.assert_array_equal(pooled, _numpy_max_pool_3x3_stride2(x))


def test_fast_stem_max_pool_gradient_routes_to_the_maxima():
    x = np.asarray(_images((2, 8, 6, 3), seed=4))  # no ties
    upstream = np.asarray(_images((2, 4, 3, 3), seed=5))

    def grad(fast_cpu_ops, inputs):
        return jax.grad(lambda v: jnp.sum(max_pool_3x3_stride2(v, fast_cpu_ops) * upstream))(inputs)

    expected = np.zeros_like(x)  # numpy: each window's gradient goes to its maximum
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    for n in range(2):
        for i in range(4):
            for j in range(3):
                for c in range(3):
                    window = padded[n, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, c]
                    a, b = np.unravel_index(np.argmax(window), (3, 3))
                    expected[n, 2 * i + a - 1, 2 * j + b - 1, c] += upstream[n, i, j, c]
    np.testing.assert_allclose(grad(True, jnp.asarray(x)), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad(False, jnp.asarray(x)), expected, rtol=1e-6, atol=1e-6)
    # Ties: a window of equal values passes on its whole gradient, shared.
    tied = jax.grad(lambda v: jnp.sum(max_pool_3x3_stride2(v, True)))(jnp.ones((1, 2, 2, 1)))
    assert np.sum(tied) == 1.0 and np.all(np.asarray(tied) > 0)


@pytest.mark.parametrize("bottleneck", [False, True])
def test_fast_cpu_ops_give_the_same_features_and_gradients(bottleneck):
    x = _images((1, 32, 32, 3))
    plain = ResNet((1, 1, 1, 1), bottleneck, num_filters=8)
    fast = ResNet((1, 1, 1, 1), bottleneck, num_filters=8, fast_cpu_ops=True)
    variables = random_variables(plain, x)

    def loss(model, p):
        features = model.apply({**variables, "params": p}, x, train=True)
        return sum(jnp.sum(f**2) for f in features.values())

    loss_and_grad = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
    (fast_loss, fast_grads) = loss_and_grad(fast, variables["params"])
    (plain_loss, plain_grads) = loss_and_grad(plain, variables["params"])
    np.testing.assert_allclose(fast_loss, plain_loss, rtol=1e-5)
    for fast_grad, plain_grad in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(plain_grads)):
        atol = 1e-4 * np.abs(plain_grad).max()
        np.testing.assert_allclose(fast_grad, plain_grad, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_is_a_strided_1x1_convolution(stride):
    x = np.asarray(_images((2, 6, 5, 3), seed=6))
    kernel = np.asarray(_images((1, 1, 3, 4), seed=7))
    y = pointwise_conv(jnp.asarray(x), jnp.asarray(kernel), (stride, stride), ((0, 0), (0, 0)))
    np.testing.assert_allclose(y, numpy_conv(x, kernel, stride, 0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="1x1 kernel"):
        pointwise_conv(jnp.asarray(x), jnp.zeros((3, 3, 3, 4)), (1, 1), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="NHWC/HWIO"):
        pointwise_conv(
            jnp.asarray(x), jnp.asarray(kernel), (1, 1), ((0, 0), (0, 0)),
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
