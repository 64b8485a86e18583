"""Reading experiment configs: `configs/*.py` files and a run's `config.json`."""

import importlib.util
import json
import os

import ml_collections


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
