"""Up-front checks of an experiment config, each error naming the bad field.

`validate_config` runs before any data is built or any model is compiled, so a
typo or an impossible value fails in a second with one line such as
`config.data.image_size=100 must be divisible by 8 ...`.
"""

import dataclasses
from typing import Any

import ml_collections

from jaxseg import registry, schema
from jaxseg.data import folders, pipeline
from jaxseg.data.sources import checks
from jaxseg.errors import ConfigError
from jaxseg.training.loop_config import LoopConfig
from jaxseg.training.optim import OptimizerConfig


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


def _validate_top_level(config) -> None:
    names = [spec.name for spec in dataclasses.fields(LoopConfig)]
    schema.read(LoopConfig, {name: config[name] for name in names if name in config}, "config")


def _validate_model(config) -> None:
    """The registered model's schema and the files it names (`check_files`, e.g. a pretrained
    checkpoint: checked here only, not when a trained run's config is read back), then its
    task's own rules (e.g. the loss section)."""
    entry = registry.MODELS.get(_get(config, "model.name"))
    fields = schema.read(entry.schema, config.model, "config.model", config)
    if hasattr(fields, "check_files"):
        fields.check_files("config.model")
    registry.TASKS.get(entry.task).target.check_config(config)


def _validate_augmentation(config) -> None:
    augmentation = checks.as_config_error(
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
    """The registered dataset kind's own checks, then the fields every kind shares."""
    registry.DATASETS.get(_get(config, "data.name")).check(config)
    _require_int(config, "data.max_instances", 1)
    checks.as_config_error("config.data.", checks.num_workers_from_data_config, config.data)
    _validate_augmentation(config)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field of `config`."""
    _validate_top_level(config)
    _validate_data(config)
    _validate_model(config)
    schema.read_section(OptimizerConfig, config, "optimizer")
