"""The pure train and eval steps and their jitted, sharded forms for one mesh."""

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxseg import sharding
from jaxseg import tasks
from jaxseg.data import batching
from jaxseg.errors import ConfigError
from jaxseg.training.state import TrainState, eval_variables


def _model_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """`batch` with its `image` as the model takes it: float32 in [0, 1]
    (`batching.model_images`: the streams' uint8 pixels scaled, float images as they are)."""
    return {**batch, "image": batching.model_images(batch["image"])}


def _micro_batches(batch: Mapping[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """Splits every `[B, ...]` field into `[count, B / count, ...]` micro-batches.

    Micro-batch j holds rows j, j + count, j + 2 count, ...: with the batch
    sharded in contiguous blocks over devices (and B divisible by count times
    the device count), every device keeps its own rows of every micro-batch.
    """
    return {
        name: jnp.swapaxes(value.reshape(value.shape[0] // count, count, *value.shape[1:]), 0, 1)
        for name, value in batch.items()
    }


def _accumulated_gradients(
    state: TrainState, batch: Mapping[str, jax.Array], loss_fn: Callable, accumulation_steps: int
) -> tuple[jax.Array, Any, Any, dict]:
    """Loss, float32 gradients, new batch statistics and loss components of one global batch.

    `batch` holds the task's `[B, ...]` train fields. It is split
    into `accumulation_steps` equal micro-batches run one after the other
    (`lax.scan`, gradients summed in the carry so one gradient tree is held at
    a time); loss, components and gradients are their means. These equal the
    full-batch values for per-pixel mean losses, not for losses whose sums run
    over the batch (such as the batch-wide Dice or Mask R-CNN's sums over sampled
    anchors and RoIs). Each micro-batch is
    normalized with its own BatchNorm statistics and updates the running
    averages in turn (`accumulation_steps` momentum updates per step).
    """
    base_rng = jax.random.fold_in(state.rng, state.step)

    def micro_step(batch_stats, index, micro_batch):
        step_rng = base_rng if accumulation_steps == 1 else jax.random.fold_in(base_rng, index)

        def compute_loss(params):
            variables = {"params": params, "batch_stats": batch_stats}
            loss, components, new_stats = loss_fn(variables, micro_batch, step_rng)
            return loss, (new_stats, components)

        (loss, (new_stats, components)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
            state.params
        )
        return loss, grads, new_stats, components

    if accumulation_steps == 1:
        return micro_step(state.batch_stats, 0, batch)

    def accumulate(carry, micro):
        batch_stats, grad_sum = carry
        loss, grads, batch_stats, components = micro_step(batch_stats, *micro)
        return (batch_stats, jax.tree.map(jnp.add, grad_sum, grads)), (loss, components)

    indices = jnp.arange(accumulation_steps)
    (batch_stats, grad_sum), (micro_losses, components) = jax.lax.scan(
        accumulate,
        (state.batch_stats, jax.tree.map(jnp.zeros_like, state.params)),
        (indices, _micro_batches(batch, accumulation_steps)),
    )
    grads = jax.tree.map(lambda total: total / accumulation_steps, grad_sum)
    components = jax.tree.map(lambda values: jnp.mean(values, axis=0), components)
    return jnp.mean(micro_losses), grads, batch_stats, components


def _updated_ema(ema_params: Any, params: Any, decay: float) -> Any:
    """`decay * ema + (1 - decay) * params`, leaf by leaf (None stays None)."""
    if ema_params is None:
        return None
    return jax.tree.map(lambda ema, new: decay * ema + (1.0 - decay) * new, ema_params, params)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    loss_fn: Callable,
    schedule: optax.Schedule,
    accumulation_steps: int = 1,
    ema_decay: float = 0.0,
) -> tuple[TrainState, dict]:
    """One optimizer step on a global batch.

    Args:
      state: the replicated train state.
      batch: the task's train fields as the input stream makes them, e.g. `image` uint8
        `[B, H, W, 3]` (or float32 in [0, 1]; see `_model_batch`) and `semantic` int32
        `[B, H, W]`.
      loss_fn: `(variables, batch, rng) -> (loss, components, new_batch_stats)`,
        a `Task.loss`.
      schedule: the learning-rate schedule, for logging.
      accumulation_steps: micro-batches the batch is split into (B must be
        divisible by it); their gradients are averaged into one update (see
        `_accumulated_gradients`).
      ema_decay: decay of `state.ema_params` (if kept), updated from the new
        params after every applied step.

    Returns:
      The new state and a dict of scalars (`loss`, each loss component,
      `grad_norm`, `learning_rate`, and the int32 `nonfinite_streak`).
      A step whose loss or gradients are not finite leaves params, batch
      statistics and optimizer state unchanged; it still advances `step` (its
      batch counts as consumed) and counts in `nonfinite_streak`/`nonfinite_steps`.
    """
    loss, grads, batch_stats, components = _accumulated_gradients(
        state, _model_batch(batch), loss_fn, accumulation_steps
    )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    updated = updated.replace(ema_params=_updated_ema(state.ema_params, updated.params, ema_decay))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
    new_state = new_state.replace(
        step=state.step + 1,
        nonfinite_streak=streak,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
    )
    step_metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "nonfinite_streak": streak,
        **{f"loss_{name}": value for name, value in components.items()},
    }
    return new_state, step_metrics


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], task: tasks.Task) -> Any:
    """`task.eval_outputs` of a batch (its `image` as `_model_batch` gives it) with
    `eval_params(state)` and the running batch statistics."""
    return task.eval_outputs(eval_variables(state), _model_batch(batch))


class CompiledSteps:
    """The jitted train and eval steps of `config`'s task on one mesh.

    `train(state, batch)` takes the task's `train_fields`, `eval(state, batch)` its
    `eval_fields`, both sharded over the mesh's `data` axis.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh, schedule: optax.Schedule):
        replicated = sharding.replicated(mesh)
        self.task = tasks.task_for(config)
        train = jax.jit(
            functools.partial(
                train_step,
                loss_fn=self.task.loss,
                schedule=schedule,
                accumulation_steps=config.grad_accumulation_steps,
                ema_decay=float(config.ema_decay),
            ),
            in_shardings=(replicated, sharding.batch_sharded(mesh)),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        evaluate = jax.jit(
            functools.partial(eval_step, task=self.task),
            out_shardings=self.task.eval_out_shardings(mesh),
        )
        self.train = sharding.CompiledTogether(train, "train_step")
        self.eval = sharding.CompiledTogether(evaluate, "eval_step")


def check_accumulation(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ConfigError unless `config.batch_size` splits into micro-batches over the devices."""
    steps = config.grad_accumulation_steps
    if config.batch_size % (steps * num_devices):
        raise ConfigError(
            f"config.grad_accumulation_steps={steps}: config.batch_size={config.batch_size} "
            f"must be divisible by grad_accumulation_steps x devices ({steps} x {num_devices})."
        )
