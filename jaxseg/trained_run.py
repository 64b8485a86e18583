"""A finished (or checkpointed) training run read back from its work directory: its config
and a checkpointed train state, for `jaxseg.predict` and `jaxseg.evaluate`."""

import os
from typing import Optional

import jax
import ml_collections

from jaxseg import checkpointing
from jaxseg import sharding
from jaxseg.config_files import load_workdir_config
from jaxseg.errors import WorkdirError
from jaxseg.training.optim import create_learning_rate_schedule
from jaxseg.training.state import TrainState, initial_state


class RunError(Exception):
    """A --workdir that is not a usable training run; the message is one line naming it."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config `workdir/config.json` holds.

    Raises:
      RunError: no config.json, or one that is not valid JSON.
    """
    try:
        return load_workdir_config(workdir)
    except FileNotFoundError as error:
        raise RunError(f"--workdir: {error}") from None
    except ValueError as error:
        path = os.path.join(workdir, "config.json")
        raise RunError(f"--workdir: {path} is not valid JSON ({error})") from None


def restore_state(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: Optional[int] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> TrainState:
    """The train state `workdir` checkpointed at `step` (None: the newest), replicated over
    `mesh` (default: one device).

    Raises:
      RunError: no checkpoints folder, no finished checkpoint, or none at `step` (the
        message lists the steps there are).
    """
    directory = os.path.join(workdir, "checkpoints")
    # Checked first: the checkpointer would create the folder.
    if not os.path.isdir(directory):
        raise RunError(f"--workdir: no checkpoints folder {directory}; has the run saved one?")
    checkpointer = checkpointing.Checkpointer(
        directory,
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps,
    )
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise RunError(f"--workdir: no finished checkpoint in {directory}")
        if step is not None and step not in steps:
            raise RunError(
                f"--step={step}: no checkpoint of that step in {directory} (it has steps "
                f"{', '.join(map(str, steps))})"
            )
        mesh = sharding.create_mesh(jax.devices()[:1]) if mesh is None else mesh
        schedule = create_learning_rate_schedule(config)
        template = initial_state(config, mesh, schedule, load_pretrained=False)
        try:
            state, _ = checkpointer.restore(template, step)
        except WorkdirError as error:
            raise RunError(f"--workdir: {error}") from None
    finally:
        checkpointer.close()
    return state


def load_trained_state(
    workdir: str, step: Optional[int] = None
) -> tuple[ml_collections.ConfigDict, TrainState]:
    """The config of `workdir` and its train state at `step` (None: the newest checkpoint).

    Raises:
      RunError: `workdir` is not a training run with such a checkpoint.
    """
    config = load_config(workdir)
    return config, restore_state(config, workdir, step)
