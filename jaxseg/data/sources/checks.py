"""Checks of `config.data` fields that several dataset kinds share, as ConfigErrors."""

import os
from typing import Any, Callable

from jaxseg import schema
from jaxseg.data import folders, geometry, shapes
from jaxseg.errors import ConfigError


def as_config_error(prefix: str, function: Callable, *args) -> Any:
    """`function(*args)`; a ValueError becomes a ConfigError starting with `prefix`."""
    try:
        return function(*args)
    except ValueError as error:
        raise ConfigError(f"{prefix}{error}") from error


def data_field(config: Any, name: str) -> Any:
    """`config.data.<name>`; ConfigError if the section lacks it."""
    if name not in config.data:
        raise ConfigError(f"config.data.{name} is missing.")
    return config.data[name]


def class_names_match_count(config: Any) -> None:
    """`config.data.num_classes` is an int >= 2 and `class_names` has that many names."""
    num_classes = schema.integer(2)(data_field(config, "num_classes"), "config.data.num_classes")
    names = data_field(config, "class_names")
    if len(names) != num_classes:
        raise ConfigError(
            f"config.data.class_names has {len(names)} names but "
            f"config.data.num_classes={num_classes}."
        )


def no_resize(config: Any, kind: str) -> None:
    """ConfigError if `config.data` sets a resize field (`geometry.RESIZE_FIELDS`, or
    train_shorter_sides) that the generated dataset `kind` cannot honour."""
    for name in (*geometry.RESIZE_FIELDS, "train_shorter_sides"):
        if config.data.get(name) is not None:
            raise ConfigError(
                f"config.data.{name}={config.data[name]!r}: {kind} is generated at image_size; "
                "only datasets read from files are resized (set it to None)."
            )


def ignore_label_matches_the_loss(config: Any) -> None:
    """The data's ignore label (the padding's semantic label) is the loss's, if any."""
    ignore_label = config.data.get("ignore_label", folders.DEFAULT_IGNORE_LABEL)
    if "loss" in config and ignore_label != config.loss.get("ignore_label"):
        raise ConfigError(
            f"config.data.ignore_label={ignore_label!r} must equal "
            f"config.loss.ignore_label={config.loss.get('ignore_label')!r}: the padding of "
            "the images holds the data's ignore label."
        )


def check_class_names(data_config: Any, class_names, source: str) -> None:
    """ValueError unless `data_config` names the classes of a dataset as `class_names` does.

    Args:
      data_config: with num_classes and class_names; its class_names[0] (the background)
        may be any name.
      class_names: the dataset's K names, the background first.
      source: where `class_names` come from, for the message.
    """
    expected = tuple(class_names)
    given = data_config.class_names
    if (
        data_config.num_classes != len(expected)
        or given is None
        or tuple(given)[1:] != expected[1:]
    ):
        raise ValueError(
            f"class_names={given!r} and num_classes={data_config.num_classes!r} do not match "
            f"the {len(expected)} classes of {source}: set --config.data.num_classes="
            f'{len(expected)} "--config.data.class_names={expected!r}"'
        )


_MAX_AUTO_WORKERS = 16


def num_workers_from_data_config(data_config) -> int:
    """The worker processes `data_config.num_workers` asks for (None: half the host's cores,
    at least 1 and at most 16); ValueError naming the field if it is not None or an int >= 0."""
    workers = data_config.get("num_workers")
    if workers is None:
        return max(1, min(_MAX_AUTO_WORKERS, (os.cpu_count() or 2) // 2))
    if not shapes.is_integer(workers) or workers < 0:
        raise ValueError(
            f"num_workers={workers!r} must be None (from the host's cores) or an int >= 0 "
            "(0 = in the training thread)"
        )
    return int(workers)
