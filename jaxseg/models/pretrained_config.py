"""`config.model.pretrained`: a model's ResNet backbone from an ImageNet checkpoint (or from
a backbone this project trained, `jaxseg.export_backbone`).

A model schema extended by `with_pretrained(schema, Backbone(submodule=...))` takes the
field `pretrained`: None (random init) or a file `pretrained.load_resnet_variables`
reads. The train state (`training.state.initial_state`) loads it on the host with
`backbone_variables(config)` and puts it in place of the freshly initialized backbone
with `replace_subtrees`, for any model so registered (Mask R-CNN: "resnet", DeepLabv3+ and
the ResNet U-Net: "backbone").

ImageNet weights expect ImageNet-normalized images: such a model normalizes its [0, 1]
images with the fields `pixel_mean` and `pixel_std` (`PIXEL_RULES`, `layers.normalize_pixels`),
and an ImageNet (torchvision / timm) file with the identity normalization is a config
error.
"""

import dataclasses
from typing import Any, Mapping, Optional

from flax import traverse_util

from jaxseg import registry, schema
from jaxseg.errors import ConfigError
from jaxseg.models.layers import IDENTITY_MEAN, IDENTITY_STD, IMAGENET_MEAN, IMAGENET_STD
from jaxseg.models.pretrained import WIDTH, check_file, listed, load_resnet_variables

FIELD = "pretrained"
# Norms whose variables a BatchNorm checkpoint fills (the same tree for both).
BATCH_NORMS = ("frozen_batch", "batch")


def _per_channel(rule: str, holds: Any) -> schema.Check:
    """3 numbers for which `holds(number)`, one per RGB channel, as a tuple of floats."""

    def check(value, path):
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and holds(v) for v in value)
        ):
            raise ConfigError(f"{path}={value!r} must be 3 numbers {rule}, one per RGB channel.")
        return tuple(float(v) for v in value)

    return check


# How a model schema reads `pixel_mean` and `pixel_std` ([0, 1] units).
PIXEL_RULES = {
    "pixel_mean": _per_channel("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "pixel_std": _per_channel("> 0", lambda v: v > 0.0),
}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Where a model keeps its ResNet: the name of its submodule and the `config.model`
    fields giving the ResNet's name, width and norm and the images' normalization."""

    submodule: str
    norm_field: str
    name_field: str = "backbone"
    width_field: str = "backbone_width"
    mean_field: str = "pixel_mean"
    std_field: str = "pixel_std"


def _check_imagenet_fields(fields: Any, backbone: Backbone, path: str) -> None:
    """The width, norm and input normalization a torchvision / timm file's variables fit."""
    named = f"{path}.{FIELD}={getattr(fields, FIELD)!r}"
    width = getattr(fields, backbone.width_field)
    if width != WIDTH:
        raise ConfigError(
            f"{named} is a width-{WIDTH} ResNet: {path}.{backbone.width_field}={width} "
            f"must be {WIDTH}."
        )
    norm = getattr(fields, backbone.norm_field)
    if norm not in BATCH_NORMS:
        raise ConfigError(
            f"{named} holds BatchNorm variables: {path}.{backbone.norm_field}={norm!r} must be "
            f"one of {', '.join(BATCH_NORMS)} (where the model allows it)."
        )
    mean, std = getattr(fields, backbone.mean_field), getattr(fields, backbone.std_field)
    if tuple(mean) == IDENTITY_MEAN and tuple(std) == IDENTITY_STD:
        raise ConfigError(
            f"{path}.{backbone.mean_field}={tuple(mean)} and {path}.{backbone.std_field}={tuple(std)} "
            f"leave the images unnormalized, but {named} expects ImageNet's normalization: "
            f"set them to {IMAGENET_MEAN} and {IMAGENET_STD}."
        )


# What a command line gives for "no file": it cannot set a string field to None.
NO_FILE = ("", "None", "none")


def _resnet(fields: Any, backbone: Backbone) -> tuple[str, int, str]:
    """(ResNet name, width, norm) of a model's configured backbone."""
    return tuple(
        getattr(fields, field)
        for field in (backbone.name_field, backbone.width_field, backbone.norm_field)
    )


def _path_string(value: Any, path: str) -> Optional[str]:
    """A non-empty string, or None for one of NO_FILE (whether the file exists is
    `check_files`' business)."""
    if not isinstance(value, str):
        raise ConfigError(f"{path}={value!r} must be None or the path of a ResNet checkpoint.")
    return None if value in NO_FILE else value


def with_pretrained(model_schema: type, backbone: Backbone) -> type:
    """`model_schema` (a `jaxseg.schema` dataclass) plus the field `pretrained` (None; from a
    command line also `--config.model.pretrained=None`), for a model whose ResNet is the
    submodule `backbone.submodule`.

    Its `check_files` (run by `validate_config` only: a trained run's config is read back
    where the file may be gone) reads the file's names and shapes: a torchvision / timm
    state dict must fit the width (`pretrained.WIDTH`), norm (`BATCH_NORMS`) and input
    normalization (ImageNet's, not the identity) the model is configured with; a Flax file
    (e.g. a backbone `jaxseg.export_backbone` wrote) must hold the configured ResNet,
    whatever its width and norm. The class attribute `pretrained_backbone` is `backbone`.
    """

    def check_files(self, path):
        file = getattr(self, FIELD)
        if file is None:
            return
        name, width, norm = _resnet(self, backbone)
        try:
            torch_layout = check_file(file, name, f"{path}.{FIELD}={file!r}", width, norm)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if torch_layout:
            _check_imagenet_fields(self, backbone, path)

    return dataclasses.make_dataclass(
        model_schema.__name__,
        [(FIELD, Optional[str], schema.field(None, schema.optional(_path_string)))],
        bases=(model_schema,),
        frozen=True,
        namespace={"check_files": check_files, "pretrained_backbone": backbone},
    )


def backbone_variables(config: Any) -> Optional[dict[str, Any]]:
    """The `replace_subtrees` replacements `config.model.pretrained` asks for:
    {"params": {submodule: ...}, "batch_stats": {submodule: ...}} of float32 numpy arrays;
    None when it is None or the model's schema has no such field."""
    entry = registry.MODELS.get(config.model.name)
    backbone = getattr(entry.schema, "pretrained_backbone", None)
    if backbone is None:
        return None
    fields = schema.read(entry.schema, config.model, "config.model", config)
    if getattr(fields, FIELD) is None:
        return None
    loaded = load_resnet_variables(getattr(fields, FIELD), *_resnet(fields, backbone))
    return {collection: {backbone.submodule: tree} for collection, tree in loaded.items()}


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def _check_same_leaves(old: Any, new: Any, where: str) -> None:
    """ValueError unless the trees `old` and `new` have the same leaf paths and shapes."""
    if not isinstance(old, Mapping):
        raise ValueError(f"the initialized variables have no {where} to replace.")
    old_shapes, new_shapes = _leaf_shapes(old), _leaf_shapes(new)
    differ = [
        f"{where}/{name} initialized {old_shapes.get(name, 'absent')} given "
        f"{new_shapes.get(name, 'absent')}"
        for name in old_shapes.keys() | new_shapes.keys()
        if old_shapes.get(name) != new_shapes.get(name)
    ]
    if differ:
        raise ValueError(
            f"variables that do not match the replacement ({len(differ)}): {listed(differ)}."
        )


def replace_subtrees(
    variables: Mapping[str, Any], replacements: Mapping[str, Any]
) -> dict[str, Any]:
    """`variables` ({collection: tree}) with each `replacements[collection][submodule]`
    subtree in place of that one, which must have exactly its leaf paths and shapes (no
    initialized leaf stays, none is added). Arrays of any kind (numpy, jax, traced);
    `variables` is not modified."""
    replaced = {collection: dict(tree) for collection, tree in variables.items()}
    for collection, subtrees in replacements.items():
        for submodule, tree in subtrees.items():
            where = f"{collection}/{submodule}"
            _check_same_leaves(replaced.get(collection, {}).get(submodule), tree, where)
            replaced[collection][submodule] = tree
    return replaced
