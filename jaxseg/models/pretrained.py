"""ImageNet ResNet weights from the files people download, as `resnet.ResNet` variables.

`load_resnet_variables(path, "resnet50")` reads a state dict in torchvision's layout
(`conv1.weight`, `bn1.weight`, `bn1.bias`, `bn1.running_mean`, `bn1.running_var`,
`layer1.0.conv1.weight`, ..., `layer1.0.downsample.0.weight`, `layer1.0.downsample.1.*`,
`fc.*`) and returns the `params` and `batch_stats` of `build_resnet("resnet50",
norm="frozen_batch")` (width 64), the same tree as norm="batch". timm's plain ResNets
(resnet18/34/50/101, not the "d" variants with a deep stem) use the same names. Both put
the stride of a Bottleneck on its 3x3 conv (v1.5), as `resnet.Bottleneck` does, pad
symmetrically, and normalize with BatchNorm's epsilon 1e-5 (`norms.NORM_EPSILON`).

Conv weights go from torch's OIHW to Flax's HWIO; BatchNorm `weight`, `bias`,
`running_mean`, `running_var` become `scale`, `bias` (params) and `mean`, `var`
(batch_stats). `num_batches_tracked` (torchvision has it, timm may not) is ignored; the
classifier head `fc.*` is ignored and logged (absl `logging.info`). Any other missing,
unexpected or misshapen array is a ValueError naming the first few.

Formats, by suffix: `.safetensors` (read with numpy, no torch), `.pth` / `.pt` / `.bin`
(torch pickles: read with torch when it is installed; without it the error gives the
one-line conversion to safetensors). A `.safetensors` file whose names start with
`params/` holds Flax variables ('/'-joined paths) as the command line writes them:

  python -m jaxseg.models.pretrained --input=FILE --resnet=resnet50 --output=OUT.safetensors

or as `jaxseg.export_backbone` writes a trained run's backbone, at that run's width and
norm (`load_resnet_variables(..., width=, norm=)`).

`config.model.pretrained` (Mask R-CNN, DeepLabv3+, the ResNet U-Net) puts such a file's
variables in place
of a model's initialized backbone: see `jaxseg.models.pretrained_config`.
"""

import argparse
import functools
import os
import re
import sys
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from absl import logging
from flax import traverse_util

from jaxseg.errors import first_few
from jaxseg.models.resnet import RESNETS, build_resnet

# The width (stem / res2 channels) of every ImageNet ResNet file.
WIDTH = 64
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
HEAD_PREFIX = "fc."
_COUNTER_SUFFIX = ".num_batches_tracked"
_FLAX_PREFIX = "params/"
_LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_SHOWN = 3
# OIHW -> HWIO and back.
_TO_HWIO = (2, 3, 1, 0)
_TO_OIHW = (3, 2, 0, 1)


@functools.lru_cache(maxsize=None)
def _variable_shapes(
    resnet_name: str, width: int = WIDTH, norm: str = "frozen_batch"
) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{(collection, *module path, leaf): shape} of the ResNet of that width and norm."""
    model = build_resnet(resnet_name, num_filters=width, norm=norm)
    images = jnp.zeros((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    return {key: leaf.shape for key, leaf in traverse_util.flatten_dict(shapes).items()}


def _torchvision_name(key: tuple[str, ...]) -> str:
    """torchvision's state-dict name of a variable, e.g. ("params", "res3_0", "shortcut",
    "conv", "kernel") -> "layer2.0.downsample.0.weight"."""
    *block, unit, part, leaf = key[1:]
    if unit == "stem":
        prefix, conv, norm = "", "conv1", "bn1"
    else:
        stage, index = block[0].removeprefix("res").split("_")
        prefix = f"layer{int(stage) - 1}.{index}."
        if unit == "shortcut":
            conv, norm = "downsample.0", "downsample.1"
        else:
            conv, norm = unit, "bn" + unit.removeprefix("conv")
    return f"{prefix}{conv if part == 'conv' else norm}.{_LEAF_NAMES[leaf]}"


def _check_path(path: str, where: str) -> str:
    """The suffix of an existing checkpoint file."""
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ValueError(f"{where} is not a file.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES):
        raise ValueError(
            f"{where}: unknown suffix {suffix!r}; use {SAFETENSORS_SUFFIX} or "
            f"{', '.join(TORCH_SUFFIXES)}."
        )
    return suffix


def conversion_command(path: str) -> str:
    """The one-line shell command converting the torch state dict `path` to safetensors
    (on a machine with torch and safetensors), written beside it."""
    output = os.path.splitext(path)[0] + SAFETENSORS_SUFFIX
    return (
        'python -c "import torch, safetensors.torch as st; st.save_file({k: v.contiguous() '
        f"for k, v in torch.load({path!r}, map_location='cpu', weights_only=True).items()}}, "
        f'{output!r})"'
    )


def _read_torch(path: str, where: str) -> dict[str, np.ndarray]:
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise ValueError(
            f"{where}: reading a torch file needs torch, which is not installed; convert it "
            f"to safetensors where torch is: {conversion_command(path)}"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pylint: disable=broad-except
        reason = ": ".join([type(error).__name__, *str(error).strip().splitlines()[:1]])
        raise ValueError(f"{where}: torch cannot read it ({reason}).") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{where} holds a {type(state).__name__}, not a state dict.")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{where}: {name!r} holds a {type(value).__name__}, not a tensor; save "
                "model.state_dict() itself."
            )
    return {
        name: (value.detach().float() if value.is_floating_point() else value).numpy()
        for name, value in state.items()
    }


def _read_safetensors(path: str, where: str, read: Callable[[str], Any]) -> Any:
    """`read(path)`, an unreadable file being a one-line ValueError starting with `where`."""
    try:
        return read(path)
    except (OSError, safetensors.SafetensorError) as error:
        raise ValueError(f"{where}: not a readable safetensors file ({error}).") from None


def _header_shapes(path: str) -> dict[str, tuple[int, ...]]:
    with safetensors.safe_open(path, framework="numpy") as file:
        return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}


def _read_arrays(path: str, where: str) -> dict[str, np.ndarray]:
    """{name: array} of the checkpoint file `path`; messages start with `where`."""
    if _check_path(path, where) != SAFETENSORS_SUFFIX:
        return _read_torch(path, where)
    return _read_safetensors(path, where, safetensors.numpy.load_file)


def _read_shapes(path: str, where: str) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the checkpoint file `path` (for safetensors, from its header only)."""
    if _check_path(path, where) != SAFETENSORS_SUFFIX:
        return {name: array.shape for name, array in _read_torch(path, where).items()}
    return _read_safetensors(path, where, _header_shapes)


def _natural(name: str) -> list:
    """Sort key putting "layer1.2" before "layer1.10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def listed(names: list[str]) -> str:
    """The first few of `names` in natural order, and how many more there are."""
    return first_few(sorted(names, key=_natural), _SHOWN)


def _is_flax_layout(names: Any) -> bool:
    """Whether a file's array names are Flax variable paths ("params/stem/conv/kernel", ...)
    as `save_variables` writes them, rather than a torchvision / timm state dict's."""
    return any(name.startswith(_FLAX_PREFIX) for name in names)


def _plan(
    shapes: Mapping[str, tuple[int, ...]], resnet_name: str, where: str, width: int, norm: str
) -> tuple[dict[tuple[str, ...], str], bool, list[str]]:
    """Which file array fills each variable: ({variable key: file name}, whether the file
    is in torchvision's layout (else Flax's), the ignored head names). A torchvision file
    is always the width-64 BatchNorm tree; a Flax file is checked against the ResNet of
    `width` and `norm`. Raises ValueError naming the first missing, misshapen or
    unexpected arrays."""
    if resnet_name not in RESNETS:
        raise ValueError(f"resnet_name must be one of {sorted(RESNETS)}, got {resnet_name!r}")
    torch_layout = not _is_flax_layout(shapes)
    plan, wanted = {}, {}
    tree = _variable_shapes(resnet_name) if torch_layout else _variable_shapes(resnet_name, width, norm)
    for key, shape in tree.items():
        name = _torchvision_name(key) if torch_layout else "/".join(key)
        plan[key] = name
        kernel = torch_layout and len(shape) == 4
        wanted[name] = tuple(shape[axis] for axis in _TO_OIHW) if kernel else shape
    layout = "torchvision" if torch_layout else "Flax"
    missing = [name for name in wanted if name not in shapes]
    if missing:
        raise ValueError(
            f"{where}: arrays of {resnet_name} missing ({len(missing)} of {len(wanted)}, "
            f"{layout} names): {listed(missing)}."
        )
    wrong = [
        f"{name} expected {wanted[name]} got {tuple(shapes[name])}"
        for name in wanted
        if tuple(shapes[name]) != wanted[name]
    ]
    if wrong:
        raise ValueError(
            f"{where}: arrays of the wrong shape for {resnet_name} ({len(wrong)}): {listed(wrong)}."
        )
    head = sorted((n for n in shapes if torch_layout and n.startswith(HEAD_PREFIX)), key=_natural)
    unexpected = [
        name
        for name in shapes
        if name not in wanted and name not in head
        and not (torch_layout and name.endswith(_COUNTER_SUFFIX))
    ]
    if unexpected:
        raise ValueError(
            f"{where}: arrays that are not {resnet_name}'s ({len(unexpected)}): "
            f"{listed(unexpected)}."
        )
    return plan, torch_layout, head


def _load(
    path: str, resnet_name: str, where: str, width: int = WIDTH, norm: str = "frozen_batch"
) -> tuple[dict[str, Any], list[str]]:
    """(`load_resnet_variables`'s variables, the ignored head names)."""
    arrays = _read_arrays(path, where)
    shapes = {name: array.shape for name, array in arrays.items()}
    plan, torch_layout, head = _plan(shapes, resnet_name, where, width, norm)
    flat = {}
    for key, name in plan.items():
        array = np.asarray(arrays[name], np.float32)
        if torch_layout and array.ndim == 4:
            array = np.ascontiguousarray(array.transpose(_TO_HWIO))
        flat[key] = array
    return traverse_util.unflatten_dict(flat), head


def load_resnet_variables(
    path: str, resnet_name: str, width: int = WIDTH, norm: str = "frozen_batch"
) -> dict[str, Any]:
    """The ResNet variables a checkpoint file holds (see the module docstring for formats).

    Args:
      path: a torchvision / timm state dict (`.safetensors`, `.pth`, `.pt`, `.bin`) or a
        Flax `.safetensors` file (this module's command line, `jaxseg.export_backbone`).
      resnet_name: "resnet18", "resnet34", "resnet50" or "resnet101".
      width, norm: the ResNet a Flax file holds (`num_filters`, `norm` of `build_resnet`);
        a torchvision / timm file is always width 64 with BatchNorm.

    Returns:
      {"params": ..., "batch_stats": ...}: exactly the tree of `build_resnet(resnet_name,
      norm="frozen_batch")` (width 64) for a state dict, of `build_resnet(resnet_name,
      num_filters=width, norm=norm)` for a Flax file (no "batch_stats" for norm "group");
      float32 numpy arrays (conv kernels HWIO). The ignored classifier head `fc.*` is
      reported with `logging.info`.

    Raises:
      ValueError: one line naming the file and the first bad names (and expected vs got
        shapes), or how to convert a torch file when torch is missing.
    """
    variables, head = _load(path, resnet_name, path, width, norm)
    if head:
        logging.info("%s: ignored the classifier head %s.", path, ", ".join(head))
    return variables


def check_file(
    path: str, resnet_name: str, where: str, width: int = WIDTH, norm: str = "frozen_batch"
) -> bool:
    """Raises ValueError (starting with `where`) unless `load_resnet_variables(path,
    resnet_name, width, norm)` would succeed; a safetensors file is checked from its header
    alone. Returns whether the file is in torchvision's layout (else Flax's)."""
    return _plan(_read_shapes(path, where), resnet_name, where, width, norm)[1]


def save_variables(variables: Mapping[str, Any], path: str) -> None:
    """Writes a variables tree (e.g. {"params": ..., "batch_stats": ...}) of float32 arrays
    to the `.safetensors` file `path`, one array per '/'-joined variable path."""
    flat = traverse_util.flatten_dict(variables, sep="/")
    safetensors.numpy.save_file({name: np.ascontiguousarray(a) for name, a in flat.items()}, path)


def main(argv: Optional[list[str]] = None) -> None:
    """The command line (see the module docstring); a bad input exits with one line."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.models.pretrained",
        description="Converts a torchvision / timm ResNet state dict to Flax variables.",
    )
    parser.add_argument("--input", required=True, help="a state dict (.safetensors, .pth, ...)")
    parser.add_argument("--resnet", required=True, choices=sorted(RESNETS))
    parser.add_argument("--output", required=True, help="the Flax .safetensors file to write")
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    if not args.output.endswith(SAFETENSORS_SUFFIX) or not os.path.isdir(folder):
        sys.exit(
            f"--output={args.output} must be a {SAFETENSORS_SUFFIX} file in an existing folder."
        )
    try:
        variables, head = _load(args.input, args.resnet, f"--input={args.input}")
        save_variables(variables, args.output)
    except ValueError as error:
        sys.exit(str(error))
    except (OSError, safetensors.SafetensorError) as error:
        sys.exit(f"--output={args.output} cannot be written ({error}).")
    ignored = f"; ignored {', '.join(head)}" if head else ""
    count = len(traverse_util.flatten_dict(variables))
    print(f"Wrote {count} {args.resnet} arrays to {args.output}{ignored}.")


if __name__ == "__main__":
    main()
