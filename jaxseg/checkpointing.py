"""Orbax checkpoints of the train state plus a small JSON record of the run.

Each checkpoint step holds two items: `state` (params, batch statistics,
optimizer state, step and RNG key, restored with the shardings of a template)
and `meta` (JSON: the data position, accumulated training time and the metric
history used for the training-curve picture). Every process calls `save` and
`restore`, as orbax requires in multi-host runs.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def _abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs, with shardings, for every array leaf of `tree`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Saves every `save_interval_steps` steps, keeps the newest `max_to_keep`."""

    def __init__(self, directory: str, *, max_to_keep: int, save_interval_steps: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True
        )
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory), options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> Optional[int]:
        """The newest finished checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

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
        """Restores `(state, meta)` at `step` (default: latest) shaped and sharded like the template."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self._manager.directory}.")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract_like(template_state)),
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
