"""Training and evaluation of segmentation models, semantic (U-Net) or instance (Mask R-CNN).

`train_and_evaluate(config, workdir)` is the whole job: validate the config,
build the data and the model, resume from the newest checkpoint in `workdir`,
train data-parallel with `jax.jit` over a device mesh, evaluate on the
validation split, and write `metrics.json`, TensorBoard events, checkpoints and
pictures into `workdir`. What differs between tasks (model, loss, eval outputs,
metrics, pictures) comes from `jaxseg.tasks.task_for(config)`.
"""

import functools
import json
import math
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from tqdm import tqdm

from jaxseg import checkpointing
from jaxseg import config_files
from jaxseg import sharding
from jaxseg import tasks
from jaxseg import visualize
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError
from jaxseg.data import pipeline
from jaxseg.metric_writer import MetricWriter
from jaxseg.preemption import PreemptionWatcher


class TrainState(train_state.TrainState):
    """Optimizer state plus BatchNorm statistics, the run's base RNG key and NaN-guard counters.

    `nonfinite_streak` counts the latest consecutive steps whose loss or
    gradients were not finite (their updates were skipped), `nonfinite_steps`
    all such steps of the run (int32 scalars). `ema_params` is the exponential
    moving average of `params` (same tree, float32) when `config.ema_decay > 0`,
    else None; evaluation uses it when present (see `eval_params`).
    """

    batch_stats: Any
    rng: jax.Array
    nonfinite_streak: jax.Array
    nonfinite_steps: jax.Array
    ema_params: Any = None


def eval_params(state: TrainState) -> Any:
    """The params evaluation uses: the EMA params when kept, else the trained params."""
    return state.params if state.ema_params is None else state.ema_params


def eval_variables(state: TrainState) -> dict[str, Any]:
    """The model variables evaluation and prediction use: `eval_params` and the running
    batch statistics."""
    return {"params": eval_params(state), "batch_stats": state.batch_stats}


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def create_learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to `config.learning_rate`, then one of `optimizer.schedule`:

    - "cosine": cosine decay to 0 at `num_train_steps`;
    - "constant";
    - "steps": multiplied by `optimizer.decay_factor` from each of the steps in
      `optimizer.decay_steps` on (the step-decay of detectron2's 1x and 3x schedules).
    """
    opt = config.optimizer
    warmup = opt.warmup_steps
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warmup, config.num_train_steps, 0.0
        )
    ramp = optax.linear_schedule(0.0, config.learning_rate, warmup)
    if opt.schedule == "constant":
        after_warmup = optax.constant_schedule(config.learning_rate)
    else:
        after_warmup = _step_decay(
            config.learning_rate, [step - warmup for step in opt.decay_steps], opt.decay_factor
        )
    return optax.join_schedules([ramp, after_warmup], [warmup])


def _step_decay(value: float, boundaries: list[int], factor: float) -> optax.Schedule:
    """`value * factor**k` at a step past (or at) k of the ascending `boundaries`."""
    boundaries = jnp.asarray(boundaries, jnp.int32)

    def schedule(step):
        passed = jnp.sum(jnp.asarray(step) >= boundaries)
        return value * jnp.asarray(factor, jnp.float32) ** passed

    return schedule


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Gradient clipping followed by AdamW, or SGD with (Nesterov or heavy-ball) momentum and
    weight decay."""
    opt = config.optimizer
    if opt.name == "adamw":
        update = optax.adamw(schedule, weight_decay=opt.weight_decay)
    else:
        update = optax.chain(
            optax.add_decayed_weights(opt.weight_decay),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    if opt.grad_clip_norm is None:
        return update
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), update)


def create_train_state(
    rng: jax.Array,
    task: tasks.Task,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    keep_ema: bool = False,
) -> TrainState:
    """Initializes the task model's params for `[H, W, C]` images, batch statistics and optimizer.

    With `keep_ema` the EMA params start as a copy of the initial params.
    """
    init_rng, state_rng = jax.random.split(rng)
    variables = task.init_variables(init_rng, image_shape)
    params = variables["params"]
    return TrainState.create(
        apply_fn=task.model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        rng=state_rng,
        nonfinite_streak=jnp.zeros((), jnp.int32),
        nonfinite_steps=jnp.zeros((), jnp.int32),
        ema_params=jax.tree.map(jnp.copy, params) if keep_ema else None,
    )


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
      batch: the task's train fields, e.g. `image` float32 `[B, H, W, 3]` and
        `semantic` int32 `[B, H, W]`.
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
        state, batch, loss_fn, accumulation_steps
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
    """`task.eval_outputs` of a batch with `eval_params(state)` and the running batch statistics."""
    return task.eval_outputs(eval_variables(state), batch)


class CompiledSteps:
    """The jitted train and eval steps of `config`'s task on one mesh.

    `train(state, batch)` takes the task's `train_fields`, `eval(state, batch)` its
    `eval_fields`, both sharded over the mesh's `data` axis.
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh, schedule: optax.Schedule):
        replicated = sharding.replicated(mesh)
        self.task = tasks.task_for(config)
        self.train = jax.jit(
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
        self.eval = jax.jit(
            functools.partial(eval_step, task=self.task),
            out_shardings=self.task.eval_out_shardings(mesh),
        )


def _fields(batch: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: batch[name] for name in names}


def evaluate(
    steps: CompiledSteps, state: TrainState, source, config: ml_collections.ConfigDict, mesh
) -> tuple[dict[str, float], dict[int, Any]]:
    """The task's metrics over the whole split `source`, in ordered padded batches.

    Returns:
      The metrics (semantic: `miou`, `pixel_accuracy`, `mean_dice`, `iou/<class>`;
      instance: the COCO `box_ap*` and `mask_ap*`), and predictions of up to
      `config.num_prediction_images` of the examples this process evaluated, keyed by
      their index in `source`.
    """
    evaluation = steps.task.new_evaluation(source)
    batches = pipeline.eval_batches(
        source,
        config.eval_batch_size,
        max_instances=config.data.max_instances,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    progress = tqdm(
        batches,
        total=math.ceil(len(source) / config.eval_batch_size),
        disable=jax.process_index() != 0,
        desc="eval",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )
    for batch in progress:
        outputs = steps.eval(
            state, sharding.shard_batch(_fields(batch, steps.task.eval_fields), mesh)
        )
        evaluation.add(outputs, batch)
    return evaluation.result()


def _json_value(value: Any) -> Any:
    """`value` with every non-finite float (an undefined metric) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(path: str, metrics: Mapping[str, Any]) -> None:
    """Writes a flat metrics dict as strict JSON: NaN and infinities become `null`."""
    with open(path, "w") as f:
        json.dump(
            {name: _json_value(value) for name, value in metrics.items()},
            f,
            indent=2,
            sort_keys=True,
            allow_nan=False,
        )


def _write_pictures(workdir: str, task: tasks.Task, val_source, predictions, history) -> None:
    """Saves the task's prediction pictures, sample inputs and the training curves as PNGs."""
    task.write_pictures(workdir, val_source, predictions)
    plotted = {name: points for name, points in history.items() if name in task.curves}
    visualize.save_training_curves(os.path.join(workdir, "training_curves.png"), plotted)


class _Timer:
    """Wall time of training steps, paused around evaluation and checkpointing."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._start: Optional[float] = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None


def sharded_train_batches(
    config, source, start_step: int, fields: tuple[str, ...], mesh
) -> Iterator[dict[str, jax.Array]]:
    """The training batches from `start_step` on, as the training loop takes them: this
    process's rows of each global batch, flipped and augmented as `config.data` says, with
    only `fields`, sharded over `mesh`'s devices (`[B_global, ...]` arrays)."""
    batches = pipeline.train_batches(
        source,
        config.batch_size,
        config.seed,
        start_step,
        flip=config.data.flip,
        augmentation=pipeline.augmentation_from_data_config(config.data),
        max_instances=config.data.max_instances,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return (sharding.shard_batch(_fields(batch, fields), mesh) for batch in batches)


def device_batches(
    config, source, start_step: int, fields: tuple[str, ...], mesh
) -> Iterator[dict[str, jax.Array]]:
    """`sharded_train_batches`, produced up to two steps ahead in a background thread, so
    that assembling them and copying them to the devices overlap the running train step."""
    return pipeline.prefetch(sharded_train_batches(config, source, start_step, fields, mesh))


def _host_metrics(step_metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    """One step's scalar metrics as Python floats."""
    return {name: float(sharding.to_host(value)) for name, value in step_metrics.items()}


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
    """Per-name float64 means over the steps of one logging interval (host floats)."""
    return {
        name: float(np.mean(np.asarray([metrics[name] for metrics in pending], np.float64)))
        for name in pending[0]
    }


def check_accumulation(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises ConfigError unless `config.batch_size` splits into micro-batches over the devices."""
    steps = config.grad_accumulation_steps
    if config.batch_size % (steps * num_devices):
        raise ConfigError(
            f"config.grad_accumulation_steps={steps}: config.batch_size={config.batch_size} "
            f"must be divisible by grad_accumulation_steps x devices ({steps} x {num_devices})."
        )


def initial_state(config, mesh, schedule: optax.Schedule) -> TrainState:
    """The freshly initialized train state of `config`, replicated over `mesh`."""
    init = functools.partial(
        create_train_state,
        task=tasks.task_for(config),
        tx=create_optimizer(config, schedule),
        image_shape=(config.data.image_size, config.data.image_size, 3),
        keep_ema=config.ema_decay > 0,
    )
    return jax.jit(init, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, devices: Optional[list] = None
) -> dict[str, Any]:
    """Trains `config`'s model into `workdir` (resuming if possible); returns final metrics.

    See `run_training`, which also returns the final train state.
    """
    return run_training(config, workdir, devices)[1]


def run_training(
    config: ml_collections.ConfigDict, workdir: str, devices: Optional[list] = None
) -> tuple[TrainState, dict[str, Any]]:
    """Trains `config`'s model into `workdir` (resuming if possible).

    SIGTERM stops training after the current step with a checkpoint (the
    result then has `preempted=True` and no metrics.json is written); rerunning
    resumes exactly where it stopped.

    Args:
      config: an experiment config (see `configs/`).
      workdir: where checkpoints, TensorBoard events, `config.json`,
        `metrics.json` and pictures go.
      devices: devices of the data-parallel mesh (default: all).

    Returns:
      The final (replicated) train state, and the flat metrics dict also
      written to `workdir/metrics.json`.

    Raises:
      ConfigError: an invalid config field (before anything is built).
      NonFiniteTrainingError: `config.max_consecutive_nonfinite_steps` steps in
        a row had non-finite gradients; the last good state is checkpointed.
    """
    validate_config(config)
    mesh = sharding.create_mesh(devices)
    sharding.check_batch_size(config.batch_size, mesh, "batch_size")
    check_accumulation(config, mesh.devices.size)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    config_files.check_workdir_config(config, workdir)
    is_writer = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if is_writer:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))

    train_source = pipeline.load_split(config.data, "train", build=is_writer)
    val_source = pipeline.load_split(config.data, "validation", build=is_writer)
    schedule = create_learning_rate_schedule(config)
    state = initial_state(config, mesh, schedule)

    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps,
    )
    meta = {"train_seconds": 0.0, "history": {}, "examples_seen": 0, "pending_metrics": []}
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        logging.info("Resumed from step %d.", int(sharding.to_host(state.step)))
    writer = MetricWriter(
        os.path.join(workdir, "tensorboard"), enabled=is_writer, history=meta["history"]
    )
    run = _TrainingRun(config, mesh, CompiledSteps(config, mesh, schedule), checkpointer, writer)
    run.timer.seconds = meta["train_seconds"]
    run.pending = list(meta.get("pending_metrics", []))
    try:
        with PreemptionWatcher() as watcher:
            state, preempted = run.train(state, train_source, val_source, watcher)
    finally:
        checkpointer.wait_until_finished()
    final_step = int(sharding.to_host(state.step))
    if preempted:
        writer.close()
        checkpointer.close()
        return state, {"step": final_step, "preempted": True}

    if run.eval_metrics is None:
        run.evaluate(state, val_source, final_step)
    result = {
        "step": final_step,
        **run.eval_metrics,
        "train_loss": run.last_train_loss(),
        "train_seconds": run.timer.seconds,
        "train_images_per_sec": (
            final_step * config.batch_size / run.timer.seconds
            if run.timer.seconds > 0
            else float("nan")
        ),
        "nonfinite_steps": int(sharding.to_host(state.nonfinite_steps)),
    }
    if is_writer:
        write_metrics(os.path.join(workdir, "metrics.json"), result)
        _write_pictures(workdir, run.steps.task, val_source, run.predictions, writer.history)
    writer.close()
    checkpointer.close()
    return state, result


class _TrainingRun:
    """The training loop of one call of `train_and_evaluate`, and what it last measured."""

    def __init__(self, config, mesh, steps: CompiledSteps, checkpointer, writer: MetricWriter):
        self.config = config
        self.mesh = mesh
        self.steps = steps
        self.checkpointer = checkpointer
        self.writer = writer
        self.timer = _Timer(0.0)
        self.eval_metrics: Optional[dict] = None
        self.predictions: dict[int, Any] = {}
        # Metrics of the steps since the last log (the current logging interval): host
        # floats, then the newest steps' device scalars, fetched only when logging or
        # saving so that steps stay asynchronous. The host part is checkpointed, so that an
        # interval cut by a preemption logs the same means as an uninterrupted run.
        self.pending: list[dict[str, float]] = []
        self.device_pending: list[dict[str, jax.Array]] = []

    def _fetch_pending(self) -> None:
        self.pending.extend(_host_metrics(metrics) for metrics in self.device_pending)
        self.device_pending = []

    def last_train_loss(self) -> float:
        points = self.writer.history.get("train/loss")
        return points[-1][1] if points else float("nan")

    def evaluate(self, state: TrainState, val_source, step: int) -> None:
        """Evaluates on the validation split, logs the metrics and keeps them."""
        self.eval_metrics, self.predictions = evaluate(
            self.steps, state, val_source, self.config, self.mesh
        )
        # Undefined metrics (NaN, e.g. AP of a size range with no object) are not logged.
        defined = {f"val/{k}": v for k, v in self.eval_metrics.items() if np.isfinite(v)}
        self.writer.write_scalars(step, defined)
        tqdm.write(f"step {step}: {self.steps.task.summary(self.eval_metrics)}")

    def save(self, state: TrainState, step: int, *, force: bool) -> None:
        self._fetch_pending()
        meta = {
            "train_seconds": self.timer.seconds,
            "history": self.writer.history,
            "examples_seen": step * self.config.batch_size,
            "pending_metrics": self.pending,
        }
        self.checkpointer.save(step, state, meta, force=force)

    def _log(self, state: TrainState, step: int, timed_steps: int, seconds: float) -> dict:
        """Logs the means of `self.pending` and the speed of the `timed_steps` steps that ran
        in this process in the last `seconds`; starts the next interval."""
        self._fetch_pending()
        summary = _mean_metrics(self.pending)
        self.pending = []
        summary.pop("nonfinite_streak")
        summary["images_per_sec"] = timed_steps * self.config.batch_size / seconds
        summary["nonfinite_steps"] = float(sharding.to_host(state.nonfinite_steps))
        self.writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
        return summary

    def _check_nonfinite(self, state: TrainState, step_metrics: dict, step: int) -> None:
        """Stops with a checkpoint of the last good state after too many non-finite steps."""
        streak = int(sharding.to_host(step_metrics["nonfinite_streak"]))
        limit = self.config.max_consecutive_nonfinite_steps
        if streak < limit:
            return
        self.save(state, step, force=True)
        self.checkpointer.wait_until_finished()
        raise NonFiniteTrainingError(
            f"{streak} consecutive training steps (up to step {step}) had a non-finite loss or "
            f"gradient (limit: config.max_consecutive_nonfinite_steps={limit}). Their updates "
            f"were skipped; the last good state is checkpointed at step {step}."
        )

    def train(
        self, state: TrainState, train_source, val_source, watcher: PreemptionWatcher
    ) -> tuple[TrainState, bool]:
        """Runs the remaining steps; returns the final state and whether it was preempted."""
        config = self.config
        start_step = int(sharding.to_host(state.step))
        batches = device_batches(
            config, train_source, start_step, self.steps.task.train_fields, self.mesh
        )
        is_writer = jax.process_index() == 0
        progress = tqdm(
            total=config.num_train_steps,
            initial=start_step,
            disable=not is_writer,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        timed_steps = 0
        self.timer.start()
        interval_start = time.perf_counter()
        previous_metrics: Optional[dict] = None
        for step in range(start_step + 1, config.num_train_steps + 1):
            state, step_metrics = self.steps.train(state, next(batches))
            self.device_pending.append(step_metrics)
            timed_steps += 1
            progress.update(1)
            if previous_metrics is not None:
                self._check_nonfinite(state, previous_metrics, step)
            previous_metrics = step_metrics
            is_last = step == config.num_train_steps
            if step % config.log_every_steps == 0 or is_last:
                self._check_nonfinite(state, step_metrics, step)
                seconds = time.perf_counter() - interval_start
                summary = self._log(state, step, timed_steps, seconds)
                progress.set_postfix(
                    loss=f"{summary['loss']:.4f}", img_s=f"{summary['images_per_sec']:.1f}"
                )
                timed_steps = 0
            preempted = watcher.stop_requested()
            if step % config.eval_every_steps == 0 or is_last:
                jax.block_until_ready(state)
                self.timer.stop()
                self.evaluate(state, val_source, step)
                self.timer.start()
            if step % config.checkpoint_every_steps == 0 or is_last or preempted:
                jax.block_until_ready(state)
                self.timer.stop()
                self.save(state, step, force=is_last or preempted)
                self.timer.start()
            if preempted:
                tqdm.write(f"Stop requested (SIGTERM): checkpointed step {step}; rerun to resume.")
                break
            if step % config.log_every_steps == 0:
                interval_start = time.perf_counter()
        jax.block_until_ready(state)
        self.timer.stop()
        progress.close()
        is_done = int(sharding.to_host(state.step)) >= config.num_train_steps
        return state, not is_done
