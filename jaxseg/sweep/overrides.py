"""Dotted config overrides (`{"loss.name": "dice"}`) set on a config, each path checked."""

from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxseg.errors import SweepError, did_you_mean


def _unknown_path(path: str, depth: int, node: Any) -> SweepError:
    """The error for override `path` whose part `depth` is not a field of `node`."""
    parts = path.split(".")
    parent = ".".join(["config", *parts[:depth]])
    choices = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
    return SweepError(
        f"unknown override path '{path}': no such field {parts[depth]!r} in {parent}"
        f"{did_you_mean(parts[depth], choices)}"
    )


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets each dotted `path` of `overrides` in `config` (in place); returns `config`.

    Raises:
      SweepError: a path that is not an existing field (with the closest names), a path
        to a whole section, or a value of the wrong type for the field.
    """
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for depth, part in enumerate([*parents, leaf]):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise _unknown_path(path, depth, node)
            if depth < len(parents):
                node = node[part]
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise SweepError(f"override path '{path}' is a config section, not a field")
        try:
            node[leaf] = value
        except TypeError as error:
            raise SweepError(f"override {path}={value!r}: {error}") from error
    return config
