"""Dotted config overrides (`{"loss.name": "dice"}`) set on a config, each path checked."""

from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxseg.config_files import unknown_field
from jaxseg.errors import SweepError


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets each dotted `path` of `overrides` in `config` (in place); returns `config`.

    Raises:
      SweepError: a path that is not an existing field (with the closest names), a path
        to a whole section, or a value of the wrong type for the field.
    """
    for path, value in overrides.items():
        reason = unknown_field(config, path)
        if reason:
            raise SweepError(f"unknown override path '{path}': {reason}")
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise SweepError(f"override path '{path}' is a config section, not a field")
        try:
            node[leaf] = value
        except TypeError as error:
            raise SweepError(f"override {path}={value!r}: {error}") from error
    return config
