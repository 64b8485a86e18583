"""ImageNet ResNet files (torchvision / timm state dicts, written here from numpy) loaded
into the project's ResNet; the converter; `config.model.pretrained` at initialization."""
import logging
import os
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from configs import deeplab_shapes, mask_rcnn_coco_tfds, mask_rcnn_shapes
from jaxseg import sharding, tasks
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError
from jaxseg.models import build_resnet
from jaxseg.models import layers, pretrained, pretrained_config
from jaxseg.models.norms import FrozenBatchNorm
from jaxseg.training.optim import create_learning_rate_schedule
from jaxseg.training.state import initial_state

# torchvision's architectures, written out as its `ResNet._make_layer` builds them.
ARCHITECTURES = {"resnet18": ((2, 2, 2, 2), False), "resnet50": ((3, 4, 6, 3), True)}
TORCH_EPS = 1e-5  # torch.nn.BatchNorm2d's default


def torchvision_state_dict(name, seed=0, counters=True):
    """A state dict with torchvision's names and shapes (OIHW convs, `fc` head) and
    distinct random float32 values; `counters`: the int64 `num_batches_tracked` too."""
    rng = np.random.default_rng(seed)
    stages, bottleneck = ARCHITECTURES[name]
    state = {}

    def conv(key, out_channels, in_channels, size):
        shape = (out_channels, in_channels, size, size)
        scale = np.sqrt(2.0 / (in_channels * size * size))
        state[f"{key}.weight"] = (rng.standard_normal(shape, np.float32) * scale).astype(np.float32)

    def batch_norm(key, channels):
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        state[f"{key}.bias"] = rng.normal(0.0, 0.1, channels).astype(np.float32)
        state[f"{key}.running_mean"] = rng.normal(0.0, 0.1, channels).astype(np.float32)
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, channels).astype(np.float32)
        if counters:
            state[f"{key}.num_batches_tracked"] = np.array(1000, np.int64)

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    inplanes = 64
    for stage, blocks in enumerate(stages, 1):
        planes = 64 * 2 ** (stage - 1)
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            if bottleneck:
                widths = [(planes, inplanes, 1), (planes, planes, 3), (4 * planes, planes, 1)]
            else:
                widths = [(planes, inplanes, 3), (planes, planes, 3)]
            for index, (out_channels, in_channels, size) in enumerate(widths, 1):
                conv(f"{prefix}.conv{index}", out_channels, in_channels, size)
                batch_norm(f"{prefix}.bn{index}", out_channels)
            out_planes = widths[-1][0]
            if block == 0 and (stride != 1 or inplanes != out_planes):
                conv(f"{prefix}.downsample.0", out_planes, inplanes, 1)
                batch_norm(f"{prefix}.downsample.1", out_planes)
            inplanes = out_planes
    state["fc.weight"] = rng.normal(0.0, 0.01, (1000, inplanes)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def write(folder, filename, state):
    path = os.path.join(folder, filename)
    safetensors.numpy.save_file(state, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{kind: (path, state dict)}: torchvision resnet18 (8 channels of layer1.0.bn2 with a
    running variance of 1e-4, where epsilon matters) and resnet50, a timm-style resnet18
    (no `num_batches_tracked`)."""
    folder = str(tmp_path_factory.mktemp("pretrained"))
    resnet18 = torchvision_state_dict("resnet18")
    resnet18["layer1.0.bn2.running_var"][:8] = 1e-4
    states = {
        "resnet18": resnet18,
        "timm_resnet18": torchvision_state_dict("resnet18", seed=1, counters=False),
        "resnet50": torchvision_state_dict("resnet50", seed=2),
    }
    return {kind: (write(folder, f"{kind}.safetensors", s), s) for kind, s in states.items()}


@pytest.mark.parametrize("kind, name", [
    ("resnet18", "resnet18"), ("timm_resnet18", "resnet18"), ("resnet50", "resnet50")
])
def test_every_variable_comes_from_the_file(files, kind, name):
    path, state = files[kind]
    variables = pretrained.load_resnet_variables(path, name)
    model = build_resnet(name, norm="frozen_batch")
    images = jnp.zeros((1, 32, 32, 3))
    fresh = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    assert jax.tree.structure(variables) == jax.tree.structure(fresh)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == jax.tree.map(
        lambda a: (a.shape, a.dtype), fresh
    )
    # Each leaf is one file array (conv kernels OIHW -> HWIO); each array fills one leaf.
    by_value = {array.tobytes(): key for key, array in state.items()}
    source = {}
    for path_key, leaf in traverse_util.flatten_dict(variables, sep="/").items():
        as_file = leaf.transpose(3, 2, 0, 1) if leaf.ndim == 4 else leaf
        source[path_key] = by_value[np.ascontiguousarray(as_file).tobytes()]
    loaded = {key for key in state if not key.startswith("fc.") and "num_batches" not in key}
    assert sorted(source.values()) == sorted(loaded)
    assert source["params/stem/conv/kernel"] == "conv1.weight"
    assert source["params/stem/norm/scale"] == "bn1.weight"
    assert source["batch_stats/res2_1/conv2/norm/var"] == "layer1.1.bn2.running_var"
    assert source["params/res3_0/shortcut/conv/kernel"] == "layer2.0.downsample.0.weight"
    assert source["batch_stats/res5_0/shortcut/norm/mean"] == "layer4.0.downsample.1.running_mean"


def test_stem_kernel_gives_the_oihw_convolution(files):
    path, state = files["resnet18"]
    kernel = pretrained.load_resnet_variables(path, "resnet18")["params"]["stem"]["conv"]["kernel"]
    x = np.random.default_rng(3).normal(size=(2, 12, 10, 3)).astype(np.float32)
    conv = nn.Conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False)
    got = np.asarray(conv.apply({"params": {"kernel": kernel}}, x))
    weight = state["conv1.weight"].astype(np.float64)  # [out, in, a, b]
    padded = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    expected = np.zeros((2, 6, 5, 64))
    for i in range(6):
        for j in range(5):
            window = padded[:, 2 * i:2 * i + 7, 2 * j:2 * j + 7]  # [n, a, b, c]
            expected[:, i, j] = np.einsum("nabc,ocab->no", window, weight)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_frozen_batch_norm_uses_the_file_statistics_with_torchs_epsilon(files):
    path, state = files["resnet18"]
    variables = pretrained.load_resnet_variables(path, "resnet18")
    norm = {collection: tree["res2_0"]["conv2"]["norm"] for collection, tree in variables.items()}
    x = np.random.default_rng(4).normal(size=(3, 4, 64)).astype(np.float32)
    got = np.asarray(FrozenBatchNorm().apply(norm, x))
    weight, bias, mean, var = (
        state[f"layer1.0.bn2.{leaf}"].astype(np.float64)
        for leaf in ("weight", "bias", "running_mean", "running_var")
    )
    expected = (x - mean) / np.sqrt(var + TORCH_EPS) * weight + bias
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    without_epsilon = (x - mean) / np.sqrt(var) * weight + bias
    assert not np.allclose(got[..., :8], without_epsilon[..., :8], rtol=1e-3)


def one_line_error(path, name):
    with pytest.raises(ValueError) as error:
        pretrained.load_resnet_variables(path, name)
    message = str(error.value)
    assert "\n" not in message and message.startswith(path), message
    return message


def test_missing_misshapen_and_unexpected_arrays_are_named(files, tmp_path):
    _, state = files["resnet18"]
    missing = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
    message = one_line_error(write(tmp_path, "missing.safetensors", missing), "resnet18")
    assert message.endswith(
        ": arrays of resnet18 missing (1 of 100, torchvision names): layer3.1.bn2.running_var."
    )
    misshapen = {**state, "layer2.0.conv1.weight": np.zeros((128, 64, 1, 1), np.float32)}
    message = one_line_error(write(tmp_path, "shape.safetensors", misshapen), "resnet18")
    assert message.endswith(
        ": arrays of the wrong shape for resnet18 (1): "
        "layer2.0.conv1.weight expected (128, 64, 3, 3) got (128, 64, 1, 1)."
    )
    extra = {**state, "layer5.0.conv1.weight": np.zeros((1,), np.float32)}
    message = one_line_error(write(tmp_path, "extra.safetensors", extra), "resnet18")
    assert message.endswith(": arrays that are not resnet18's (1): layer5.0.conv1.weight.")


def test_a_file_of_another_resnet_is_refused(files):
    message = one_line_error(files["resnet50"][0], "resnet18")
    assert re.search(
        r"wrong shape for resnet18 \(\d+\): layer1\.0\.conv1\.weight expected \(64, 64, 3, 3\) got "
        r"\(64, 64, 1, 1\), .* and \d+ more\.$",
        message,
    )
    message = one_line_error(files["resnet18"][0], "resnet50")
    assert re.search(r"resnet50 missing \(\d+ of 265, torchvision names\): layer1\.0\.bn3", message)


def test_the_classifier_head_is_ignored_and_logged(files, tmp_path, caplog):
    path, state = files["timm_resnet18"]
    with caplog.at_level(logging.INFO, logger="absl"):
        with_head = pretrained.load_resnet_variables(path, "resnet18")
    assert f"{path}: ignored the classifier head fc.bias, fc.weight." in caplog.messages
    caplog.clear()
    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    with caplog.at_level(logging.INFO, logger="absl"):
        headless_path = write(tmp_path, "headless.safetensors", headless)
        without = pretrained.load_resnet_variables(headless_path, "resnet18")
    assert not caplog.messages
    assert jax.tree.all(jax.tree.map(np.array_equal, with_head, without))


def test_a_torch_file_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    path = str(tmp_path / "resnet50-0676ba61.pth")
    with open(path, "wb") as file:
        file.write(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    message = one_line_error(path, "resnet50")
    output = str(tmp_path / "resnet50-0676ba61.safetensors")
    assert message == (
        f"{path}: reading a torch file needs torch, which is not installed; convert it to "
        'safetensors where torch is: python -c "import torch, safetensors.torch as st; '
        "st.save_file({k: v.contiguous() for k, v in torch.load("
        f"'{path}', map_location='cpu', weights_only=True).items()}}, '{output}')\""
    )


def test_unusable_files_are_one_line_errors(tmp_path):
    absent = str(tmp_path / "absent.safetensors")
    assert one_line_error(absent, "resnet18") == f"{absent} is not a file."
    odd = str(tmp_path / "weights.npz")
    np.savez(odd, a=np.zeros(1))
    assert "unknown suffix '.npz'" in one_line_error(odd, "resnet18")
    broken = str(tmp_path / "broken.safetensors")
    with open(broken, "wb") as file:
        file.write(b"\xff" * 32)
    assert "not a readable safetensors file" in one_line_error(broken, "resnet18")


def test_the_converter_writes_flax_names_that_load_back(files, tmp_path, capsys):
    path, _ = files["resnet18"]
    output = str(tmp_path / "flax.safetensors")
    pretrained.main([f"--input={path}", "--resnet=resnet18", f"--output={output}"])
    assert capsys.readouterr().out == (
        f"Wrote 100 resnet18 arrays to {output}; ignored fc.bias, fc.weight.\n"
    )
    written = safetensors.numpy.load_file(output)
    expected = pretrained.load_resnet_variables(path, "resnet18")
    assert written.keys() == traverse_util.flatten_dict(expected, sep="/").keys()
    assert written["params/stem/conv/kernel"].shape == (7, 7, 3, 64)
    again = pretrained.load_resnet_variables(output, "resnet18")
    assert jax.tree.structure(again) == jax.tree.structure(expected)
    assert jax.tree.all(jax.tree.map(np.array_equal, again, expected))
    with pytest.raises(SystemExit) as exit_info:
        pretrained.main([f"--input={output}", "--resnet=resnet50", f"--output={output}"])
    assert str(exit_info.value).startswith(f"--input={output}: arrays of resnet50 missing (")


def deeplab_config(path, **model):
    config = deeplab_shapes.get_config()
    config.data.image_size = 32
    config.model.update({
        "backbone_width": 64, "aspp_channels": 8, "decoder_channels": 8,
        "pixel_mean": layers.IMAGENET_MEAN, "pixel_std": layers.IMAGENET_STD, **model,
    })
    config.model.pretrained = path
    return config


def initial_state_from_file(config, path: str):
    """`config`'s initial state on one device, whose `backbone` params and batch stats
    must be exactly the ResNet-18 variables of the file `path` (`config.model.pretrained`)."""
    validate_config(config)
    mesh, schedule = sharding.create_mesh(jax.devices()[:1]), create_learning_rate_schedule(config)
    state = initial_state(config, mesh, schedule)
    expected = pretrained.load_resnet_variables(path, "resnet18")
    for collection, tree in (("params", state.params), ("batch_stats", state.batch_stats)):
        assert jax.tree.all(jax.tree.map(np.array_equal, tree["backbone"], expected[collection]))
    return state, expected


def test_config_pretrained_replaces_the_deeplab_backbone_at_init(files, tmp_path):
    path, _ = files["resnet18"]
    config = deeplab_config(path)
    state, expected = initial_state_from_file(config, path)
    assert {"aspp", "decoder"} <= set(state.params)
    # A restore template reads no file (a trained run's may be gone): all initialized.
    config.model.pretrained = str(tmp_path / "moved.safetensors")
    mesh, schedule = sharding.create_mesh(jax.devices()[:1]), create_learning_rate_schedule(config)
    template = initial_state(config, mesh, schedule, load_pretrained=False)
    assert jax.tree.structure(template.params) == jax.tree.structure(state.params)
    kernel = expected["params"]["stem"]["conv"]["kernel"]
    assert not np.allclose(template.params["backbone"]["stem"]["conv"]["kernel"], kernel)


def test_mask_rcnn_backbone_is_its_resnet_submodule(files):
    path, _ = files["resnet18"]
    config = mask_rcnn_shapes.get_config()
    config.data.image_size = 32
    config.model.update(backbone_width=64, backbone_norm="frozen_batch", pretrained=path)
    validate_config(config)
    task = tasks.task_for(config)
    shapes = jax.eval_shape(lambda: task.init_variables(jax.random.key(0), (32, 32, 3)))
    replacements = pretrained_config.backbone_variables(config)
    assert set(replacements) == {"params", "batch_stats"}
    replaced = pretrained_config.replace_subtrees(shapes, replacements)
    assert replaced["params"]["resnet"] is replacements["params"]["resnet"]
    assert replaced["params"]["fpn"] is shapes["params"]["fpn"]
    partial = {"params": {"resnet": {**replacements["params"]["resnet"], "stem": {}}}}
    with pytest.raises(ValueError, match=r"^variables that do not match the replacement \(3\): "
                       r"params/resnet/stem/conv/kernel initialized \(7, 7, 3, 64\) given absent"):
        pretrained_config.replace_subtrees(shapes, partial)


def config_error(config):
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


def test_config_errors_name_the_pretrained_field(files, tmp_path):
    path, _ = files["resnet18"]
    assert config_error(deeplab_config(path, backbone_width=32)) == (
        f"config.model.pretrained={path!r} is a width-64 ResNet: "
        "config.model.backbone_width=32 must be 64."
    )
    absent = str(tmp_path / "absent.safetensors")
    message = f"config.model.pretrained={absent!r} is not a file."
    assert config_error(deeplab_config(absent)) == message
    assert config_error(deeplab_config(path, backbone="resnet34")).startswith(
        f"config.model.pretrained={path!r}: arrays of resnet34 missing (80 of 180, torchvision "
        "names): "
    )
    assert config_error(deeplab_config(path, norm="group")) == (
        f"config.model.pretrained={path!r} holds BatchNorm variables: config.model.norm='group' "
        "must be one of frozen_batch, batch (where the model allows it)."
    )
    config = mask_rcnn_shapes.get_config()
    config.model.update(backbone_width=64, pretrained=path)  # backbone_norm stays "group"
    assert "config.model.backbone_norm='group' must be one of" in config_error(config)
    with config.model.ignore_type():
        config.model.pretrained = 3
    assert config_error(config) == (
        "config.model.pretrained=3 must be None or the path of a ResNet checkpoint."
    )


@pytest.mark.parametrize("no_file", ["None", ""])
def test_a_command_line_none_means_no_pretrained_file(no_file):
    """`--config.model.pretrained=None` reaches the config as the string 'None'."""
    config = mask_rcnn_coco_tfds.get_config()  # its data needs no folder
    assert config_error(config) == (
        "config.model.pretrained='weights/resnet50.safetensors' is not a file."
    )
    config.model.pretrained = no_file
    validate_config(config)
    assert pretrained_config.backbone_variables(config) is None


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])  # resnet50: the v1.5 stride
def test_torchvision_features_match(tmp_path, name):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        expected = {}
        layers = (model.layer1, model.layer2, model.layer3, model.layer4)
        for level, layer in zip((2, 3, 4, 5), layers):
            x = layer(x)
            expected[f"C{level}"] = x.permute(0, 2, 3, 1).numpy()
    path = str(tmp_path / f"{name}.pth")
    torch.save(model.state_dict(), path)
    variables = pretrained.load_resnet_variables(path, name)
    features = build_resnet(name).apply(
        variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy()), train=False
    )
    for level, reference in expected.items():
        scale = np.abs(reference).max()
        np.testing.assert_allclose(
            features[level], reference, rtol=1e-4, atol=1e-4 * scale, err_msg=level
        )
