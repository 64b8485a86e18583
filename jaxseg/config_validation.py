"""Up-front checks of an experiment config, each error naming the bad field.

`validate_config` runs before any data is built or any model is compiled, so a
typo or an impossible value fails in a second with one line such as
`config.data.image_size=100 must be divisible by 8 ...`.
"""

import dataclasses
from typing import Any, Iterable

import ml_collections

from jaxseg import registry, schema
from jaxseg.data import catalog, coco_folder, folders, pipeline
from jaxseg.errors import ConfigError
from jaxseg.training.loop_config import LoopConfig
from jaxseg.training.optim import OptimizerConfig

DATA_NAMES = pipeline.DATASETS


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node = config
    parts = path.split(".")
    for depth, part in enumerate(parts, 1):
        if part not in node:
            raise ConfigError(f"config.{'.'.join(parts[:depth])} is missing.")
        node = node[part]
    return node


def _require_int(config, path: str, minimum: int) -> int:
    return schema.integer(minimum)(_get(config, path), f"config.{path}")


def _require_choice(config, path: str, choices: Iterable[Any]) -> Any:
    return schema.one_of(*choices)(_get(config, path), f"config.{path}")


def _validate_top_level(config) -> None:
    names = [spec.name for spec in dataclasses.fields(LoopConfig)]
    schema.read(LoopConfig, {name: config[name] for name in names if name in config}, "config")


def _validate_model(config) -> None:
    """The registered model's schema, then its task's own rules (e.g. the loss section)."""
    entry = registry.MODELS.get(_get(config, "model.name"))
    schema.read(entry.schema, config.model, "config.model", config)
    registry.TASKS.get(entry.task).target.check_config(config)


def _validate_class_names(config) -> None:
    num_classes = _require_int(config, "data.num_classes", 2)
    names = _get(config, "data.class_names")
    if len(names) != num_classes:
        raise ConfigError(
            f"config.data.class_names has {len(names)} names but "
            f"config.data.num_classes={num_classes}."
        )


def _as_config_error(prefix: str, function, *args):
    """`function(*args)`; a ValueError becomes a ConfigError starting with `prefix`."""
    try:
        return function(*args)
    except ValueError as error:
        raise ConfigError(f"{prefix}{error}") from error


def _validate_shapes_data(config) -> None:
    _validate_class_names(config)
    _require_int(config, "data.num_train", 1)
    _require_int(config, "data.num_validation", 1)
    _require_int(config, "data.num_test", 1)
    _as_config_error("config.data: ", pipeline.shapes_config_from_data_config, config.data)


def _check_ignore_label(config) -> None:
    ignore_label = config.data.get("ignore_label", folders.DEFAULT_IGNORE_LABEL)
    if "loss" in config and ignore_label != config.loss.get("ignore_label"):
        raise ConfigError(
            f"config.data.ignore_label={ignore_label!r} must equal "
            f"config.loss.ignore_label={config.loss.get('ignore_label')!r}: the padding of "
            "the images holds the data's ignore label."
        )


def _validate_coco_folder_data(config) -> None:
    _check_ignore_label(config)
    folder = _as_config_error(
        "config.data.", pipeline.coco_folder_config_from_data_config, config.data
    )
    path, ignore_label = folder.annotations, folder.ignore_label
    names = _as_config_error("config.data.annotations: ", coco_folder.read_class_names, path)
    _as_config_error("config.data.", pipeline.check_class_names, config.data, names, path)
    _as_config_error("config.data.", coco_folder.check_ignore_label, ignore_label, names, path)


def _validate_semantic_folder_data(config) -> None:
    _validate_class_names(config)
    _check_ignore_label(config)
    _as_config_error("config.data.", pipeline.semantic_folder_config_from_data_config, config.data)


def _validate_catalog_data(config) -> None:
    _check_ignore_label(config)
    dataset = _as_config_error(
        "config.data.", pipeline.catalog_config_from_data_config, config.data
    )
    names = catalog.class_names(dataset.tfds_name)
    _as_config_error(
        "config.data.", pipeline.check_class_names, config.data, names, dataset.tfds_name
    )


def _validate_augmentation(config) -> None:
    augmentation = _as_config_error(
        "config.data.", pipeline.augmentation_from_data_config, config.data
    )
    loss_ignore_label = config.loss.get("ignore_label") if "loss" in config else None
    padding_label = augmentation.ignore_label
    if augmentation.scale_jitter is not None and loss_ignore_label not in (None, padding_label):
        raise ConfigError(
            f"config.data.scale_jitter={config.data.scale_jitter!r} pads semantic maps with "
            f"the data's ignore label {padding_label} (config.data.ignore_label, default "
            f"{folders.DEFAULT_IGNORE_LABEL}), which must equal "
            f"config.loss.ignore_label={loss_ignore_label!r}."
        )


def _validate_data(config) -> None:
    validators = {
        "shapes": _validate_shapes_data,
        "coco_folder": _validate_coco_folder_data,
        "semantic_folder": _validate_semantic_folder_data,
        "tfds": _validate_catalog_data,
    }
    validators[_require_choice(config, "data.name", DATA_NAMES)](config)
    _require_int(config, "data.max_instances", 1)
    _validate_augmentation(config)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field of `config`."""
    _validate_top_level(config)
    _validate_data(config)
    _validate_model(config)
    schema.read_section(OptimizerConfig, config, "optimizer")
