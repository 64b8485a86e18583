"""Up-front checks of an experiment config, each error naming the bad field.

`validate_config` runs before any data is built or any model is compiled, so a
typo or an impossible value fails in a second with one line such as
`config.data.image_size=100 must be divisible by 8 ...`.
"""

from typing import Any, Iterable

import ml_collections

from jaxseg.data import pipeline

MODEL_NAMES = ("unet",)
DATA_NAMES = ("shapes",)
NORMS = ("batch", "group", "none")
UPSAMPLINGS = ("transpose", "bilinear")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """A config field holds a value the experiment cannot run with."""


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node = config
    for part in path.split("."):
        if part not in node:
            raise ConfigError(f"config.{path} is missing.")
        node = node[part]
    return node


def _require_int(config, path: str, minimum: int) -> int:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config.{path}={value!r} must be an integer >= {minimum}.")
    return value


def _require_positive_number(config, path: str) -> float:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"config.{path}={value!r} must be a number > 0.")
    return value


def _require_choice(config, path: str, choices: Iterable[str]) -> str:
    value = _get(config, path)
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"config.{path}={value!r} is not one of {', '.join(choices)}.")
    return value


def _validate_top_level(config) -> None:
    _require_int(config, "seed", 0)
    _require_int(config, "batch_size", 1)
    _require_int(config, "eval_batch_size", 1)
    _require_int(config, "num_train_steps", 1)
    _require_positive_number(config, "learning_rate")
    for field in (
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        _require_int(config, field, 1)
    _require_int(config, "num_prediction_images", 0)
    _require_int(config, "max_consecutive_nonfinite_steps", 1)
    steps = _require_int(config, "grad_accumulation_steps", 1)
    if config.batch_size % steps:
        raise ConfigError(
            f"config.grad_accumulation_steps={steps} must divide "
            f"config.batch_size={config.batch_size}."
        )
    decay = _get(config, "ema_decay")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ConfigError(f"config.ema_decay={decay!r} must be a number in [0, 1) (0 = no EMA).")


def _validate_model(config) -> None:
    from jaxseg.models.unet import required_divisor  # pylint: disable=g-import-not-at-top

    _require_choice(config, "model.name", MODEL_NAMES)
    features = _get(config, "model.features")
    if (
        not isinstance(features, (tuple, list))
        or not features
        or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in features)
    ):
        raise ConfigError(
            f"config.model.features={features!r} must be a non-empty tuple of positive ints."
        )
    _require_choice(config, "model.norm", NORMS)
    _require_choice(config, "model.upsample", UPSAMPLINGS)
    _require_choice(config, "model.dtype", DTYPES)
    if not isinstance(_get(config, "model.remat"), bool):
        raise ConfigError(f"config.model.remat={config.model.remat!r} must be True or False.")
    rate = _get(config, "model.dropout_rate")
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"config.model.dropout_rate={rate!r} must be in [0, 1).")
    size = _require_int(config, "data.image_size", 1)
    divisor = required_divisor(features)
    if size % divisor:
        raise ConfigError(
            f"config.data.image_size={size} must be divisible by {divisor}: the U-Net "
            f"with config.model.features={tuple(features)} pools "
            f"{len(features) - 1} times by 2."
        )


def _validate_data(config) -> None:
    _require_choice(config, "data.name", DATA_NAMES)
    num_classes = _require_int(config, "data.num_classes", 2)
    names = _get(config, "data.class_names")
    if len(names) != num_classes:
        raise ConfigError(
            f"config.data.class_names has {len(names)} names but "
            f"config.data.num_classes={num_classes}."
        )
    _require_int(config, "data.num_train", 1)
    _require_int(config, "data.num_validation", 1)
    _require_int(config, "data.num_test", 1)
    _require_int(config, "data.max_instances", 1)
    try:
        pipeline.shapes_config_from_data_config(config.data)
    except ValueError as error:
        raise ConfigError(f"config.data: {error}") from error


def _validate_loss(config) -> None:
    from jaxseg.losses import parse_loss_spec  # pylint: disable=g-import-not-at-top

    spec = _get(config, "loss.name")
    try:
        parse_loss_spec(spec)
    except ValueError as error:
        raise ConfigError(f"config.loss.name={spec!r}: {error}") from error
    ignore = _require_int(config, "loss.ignore_label", 0)
    if ignore < _get(config, "data.num_classes"):
        raise ConfigError(
            f"config.loss.ignore_label={ignore} collides with a class id "
            f"(config.data.num_classes={config.data.num_classes})."
        )


def _validate_optimizer(config) -> None:
    _require_choice(config, "optimizer.name", OPTIMIZERS)
    _require_choice(config, "optimizer.schedule", SCHEDULES)
    warmup = _require_int(config, "optimizer.warmup_steps", 0)
    if warmup >= config.num_train_steps:
        raise ConfigError(
            f"config.optimizer.warmup_steps={warmup} must be smaller than "
            f"config.num_train_steps={config.num_train_steps}."
        )
    if _get(config, "optimizer.weight_decay") < 0:
        raise ConfigError("config.optimizer.weight_decay must be >= 0.")
    clip = _get(config, "optimizer.grad_clip_norm")
    if clip is not None and clip <= 0:
        raise ConfigError(
            f"config.optimizer.grad_clip_norm={clip!r} must be > 0 (or None for no clipping)."
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field of `config`."""
    _validate_top_level(config)
    _validate_data(config)
    _validate_model(config)
    _validate_loss(config)
    _validate_optimizer(config)
