"""Reading experiment configs: `configs/*.py` files and a run's `config.json`."""

import importlib.util
import json
import os
from typing import Any, Mapping, Optional

import ml_collections

from jaxseg.errors import WorkdirError, did_you_mean


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Calls `get_config()` of the Python config file at `path`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path} not found.")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"jaxseg_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path} defines no get_config().")
    return module.get_config()


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote to `workdir/config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a jaxseg training directory?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


# Fields a rerun in the same work directory may change: they extend the run or change when
# it logs, evaluates and checkpoints, not what it computes.
RESUMABLE_CHANGES = (
    "num_train_steps",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
)
_LISTED_DIFFERENCES = 5


def _flattened(tree: Any, prefix: str = "config") -> dict[str, Any]:
    """`{"config.a.b": value}` for every leaf of a nested dict (JSON types)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for name, value in tree.items():
        flat.update(_flattened(value, f"{prefix}.{name}"))
    return flat


def config_differences(stored: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """`{"config.a.b": (stored value, config's value)}` for every field where `config` differs
    from the JSON dict `stored` (a field present in only one of them is `_ABSENT` in the
    other), sorted by name."""
    current = _flattened(json.loads(config.to_json_best_effort()))
    previous = _flattened(dict(stored))
    pairs = {
        name: (previous.get(name, _ABSENT), current.get(name, _ABSENT))
        for name in set(current) | set(previous)
    }
    return {name: pair for name, pair in sorted(pairs.items()) if pair[0] != pair[1]}


class _Absent:
    """The value shown for a field one of two configs does not have."""

    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def check_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises WorkdirError if `workdir` holds a run of another config.

    A rerun in a work directory resumes the run stored there, so its config may differ from
    the stored `config.json` only in `RESUMABLE_CHANGES`. The error names the other fields
    that differ, with both values; nothing in `workdir` is changed.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as error:
        raise WorkdirError(f"{path} cannot be read as JSON ({error}); is {workdir} a jaxseg run?")
    allowed = {f"config.{name}" for name in RESUMABLE_CHANGES}
    differing = {
        name: pair
        for name, pair in config_differences(stored, config).items()
        if name not in allowed
    }
    if not differing:
        return
    listed = "; ".join(
        f"{name} is {there!r} there, {here!r} here"
        for name, (there, here) in list(differing.items())[:_LISTED_DIFFERENCES]
    )
    more = len(differing) - _LISTED_DIFFERENCES
    listed += f"; and {more} more" if more > 0 else ""
    raise WorkdirError(
        f"--workdir {workdir} holds a run of another config ({path}): {listed}. Use a new "
        f"--workdir, or change only {', '.join(RESUMABLE_CHANGES)} to continue that run."
    )


def unknown_field(config: ml_collections.ConfigDict, path: str) -> Optional[str]:
    """None if the dotted `path` ("model.norm") names a field of `config`, else the reason:
    "no such field 'normm' in config.model (did you mean 'norm'?)"."""
    node, names = config, path.split(".")
    for depth, name in enumerate(names):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            parent = ".".join(["config", *names[:depth]])
            choices = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
            return f"no such field {name!r} in {parent}{did_you_mean(name, choices)}"
        node = node[name]
    return None


def flag_value(argv: list[str], name: str) -> Optional[str]:
    """The value of `--name=value` or `--name value` in `argv`, or None."""
    for position, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and position + 1 < len(argv):
            return argv[position + 1]
    return None


def bad_override_message(config: ml_collections.ConfigDict, argv: list[str]) -> str:
    """One line naming the first `--config.a.b` override in `argv` of a field `config` lacks."""
    for arg in argv[1:]:
        if arg.startswith("--config."):
            reason = unknown_field(config, arg[len("--config."):].split("=", 1)[0])
            if reason:
                return f"Invalid config override {arg}: {reason}."
    overrides = " ".join(arg for arg in argv[1:] if arg.startswith("--config."))
    return f"Invalid config override among {overrides}."
