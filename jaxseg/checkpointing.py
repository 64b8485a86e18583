"""Orbax checkpoints of the train state plus a small JSON record of the run.

Each checkpoint step holds two items: `state` (params, batch statistics,
optimizer state, step and RNG key, restored with the shardings of a template)
and `meta` (JSON: the data position, accumulated training time and the metrics of
the logging interval in progress). The metric history is in the work directory's
`metrics.jsonl` (`jaxseg.metric_writer`). Every process calls `save` and
`restore`, as orbax requires in multi-host runs.
"""

import os
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store
from orbax.checkpoint._src.serialization import type_handler_registry

from jaxseg import sharding
from jaxseg.errors import WorkdirError, first_few

# Part of the name of a checkpoint folder orbax has not finished writing.
TMP_MARKER = ".orbax-checkpoint-tmp"
# The smallest slice of a replicated array that each replica writes its own part of
# (orbax's replica-parallel saving); smaller arrays are written whole by one replica.
# Slicing compiles one program per array shape and device: without a floor the first save
# of the tests' small Mask R-CNN on 8 host devices compiled 216 of them, 18 s of a 93 s
# run (AVX2 AMD EPYC), for arrays of a few kB.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _register_array_handler() -> None:
    """Makes orbax save jax.Arrays with `MIN_REPLICA_SLICE_BYTES`, otherwise as its default
    handler does (the same array metadata store). The handler is orbax's global one (the
    standard checkpoint handler takes no registry of its own), replaced without the
    warning `register_type_handler` would print at every command's start."""
    handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        array_metadata_store=array_metadata_store.Store(),
    )
    type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(
        jax.Array, handler, override=True, ignore_warnings=True
    )


_register_array_handler()


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
    """Dotted path (`params.conv.kernel`) -> shape of every array of a state, or of the
    arrays orbax's metadata tree describes (the same paths for the same state)."""
    return {
        jax.tree_util.keystr(path, simple=True, separator="."): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _differences(stored: dict[str, tuple], wanted: dict[str, tuple]) -> str:
    """What differs between a checkpoint's arrays and a template's, in one line ("" if nothing)."""
    reshaped = [f"{name} {stored[name]} there, {shape} here"
                for name, shape in wanted.items() if name in stored and stored[name] != shape]
    parts = [
        ("in the checkpoint only: ", sorted(set(stored) - set(wanted))),
        ("in this run only: ", sorted(set(wanted) - set(stored))),
        ("other shapes: ", reshaped),
    ]
    return "; ".join(label + first_few(names, 3) for label, names in parts if names)


def warn_unfinished(directory: str) -> list[str]:
    """Warns about each checkpoint folder a killed save left half-written; returns their names.

    Orbax writes each checkpoint into `<step>.orbax-checkpoint-tmp-<time>` and renames it
    when complete, so such a folder was never finished; the checkpoint manager deletes
    them (`cleanup_tmp_directories`).
    """
    if not os.path.isdir(directory):
        return []
    unfinished = sorted(name for name in os.listdir(directory) if TMP_MARKER in name)
    for name in unfinished:
        warnings.warn(
            f"Skipping half-written checkpoint {os.path.join(directory, name)} "
            "(a save was interrupted); resuming from the newest complete one."
        )
    return unfinished


class Checkpointer:
    """Saves every `save_interval_steps` steps, keeps the newest `max_to_keep`.

    Half-written checkpoints left by a killed process are skipped (with a
    warning) and deleted by orbax when the checkpointer opens the directory.
    """

    def __init__(self, directory: str, *, max_to_keep: int, save_interval_steps: int):
        directory = os.path.abspath(directory)
        warn_unfinished(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            create=True,
            cleanup_tmp_directories=True,
        )
        # Handlers named up front (the ones the save and restore args imply), so that a
        # fresh manager can read a checkpoint's metadata before restoring it.
        self._manager = ocp.CheckpointManager(
            directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> Optional[int]:
        """The newest finished checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of the finished checkpoints, increasing."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
        """Starts saving `state` and `meta` at `step` (asynchronously); returns whether it saves.

        Without `force`, steps off the save interval are skipped.
        """
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def restore(self, template_state: Any, step: Optional[int] = None) -> tuple[Any, dict]:
        """Restores `(state, meta)` at `step` (default: latest) shaped and sharded like the template.

        Raises:
          WorkdirError: one line, when the checkpoint's arrays do not fit the template's
            (another model or optimizer than the one that wrote it).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self._manager.directory}.")
        stored = self._manager.item_metadata(step)["state"]
        differences = _differences(_leaf_shapes(getattr(stored, "tree", stored)),
                                   _leaf_shapes(template_state))
        if differences:
            raise WorkdirError(
                f"the checkpoint of step {step} in {self._manager.directory} does not fit this "
                f"run's model and optimizer ({differences}): resume it with the code and config "
                "that wrote it, or start a new --workdir"
            )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(sharding.abstract_arrays(template_state)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], dict(restored["meta"])

    def wait_until_finished(self) -> None:
        """Blocks until any asynchronous save has been written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager's resources."""
        self._manager.close()
