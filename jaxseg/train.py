"""Training and evaluation of segmentation models, semantic (U-Net) or instance (Mask R-CNN).

`train_and_evaluate(config, workdir)` is the whole job: validate the config,
build the data and the model, resume from the newest checkpoint in `workdir`,
train data-parallel with `jax.jit` over a device mesh, evaluate on the
validation split, and write `metrics.json`, TensorBoard events, checkpoints and
pictures into `workdir`. What differs between tasks (model, loss, eval outputs,
metrics, pictures) comes from `jaxseg.tasks.task_for(config)`.
"""

import concurrent.futures
import os
import time
from typing import Any, Mapping, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from jaxseg import checkpointing
from jaxseg import config_files
from jaxseg import sharding
from jaxseg import tasks
from jaxseg import training_curves
from jaxseg.config_validation import validate_config
from jaxseg.data import pipeline
from jaxseg.metric_writer import MetricWriter
from jaxseg.preemption import PreemptionWatcher
from jaxseg.training.evaluation_pass import compile_eval_in_background, evaluate, write_metrics
from jaxseg.training.feed import device_batches
from jaxseg.training.optim import create_learning_rate_schedule
from jaxseg.training.state import TrainState, initial_state
from jaxseg.training.steps import CompiledSteps, check_accumulation


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def _write_pictures(workdir: str, task: tasks.Task, val_source, predictions, history) -> None:
    """Saves the task's prediction pictures, sample inputs and the training curves as PNGs."""
    task.write_pictures(workdir, val_source, predictions)
    plotted = {name: points for name, points in history.items() if name in task.curves}
    training_curves.save_training_curves(os.path.join(workdir, "training_curves.png"), plotted)


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


def _host_metrics(step_metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    """One step's scalar metrics as Python floats."""
    return {name: float(sharding.to_host(value)) for name, value in step_metrics.items()}


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
    """Per-name float64 means over the steps of one logging interval (host floats)."""
    return {
        name: float(np.mean(np.asarray([metrics[name] for metrics in pending], np.float64)))
        for name in pending[0]
    }


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
    meta = {"train_seconds": 0.0, "examples_seen": 0, "pending_metrics": []}
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        logging.info("Resumed from step %d.", int(sharding.to_host(state.step)))
    writer = MetricWriter(
        os.path.join(workdir, "tensorboard"),
        os.path.join(workdir, "metrics.jsonl"),
        enabled=is_writer,
        resume_step=int(sharding.to_host(state.step)),
    )
    run = _TrainingRun(
        config, mesh, CompiledSteps(config, mesh, schedule), checkpointer, writer, workdir
    )
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

    def __init__(
        self, config, mesh, steps: CompiledSteps, checkpointer, writer: MetricWriter, workdir: str
    ):
        self.config = config
        self.workdir = workdir
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
        # The eval step compiling in a thread while the first train step compiles.
        self.eval_compiled: Optional[concurrent.futures.Future] = None

    def _fetch_pending(self) -> None:
        self.pending.extend(_host_metrics(metrics) for metrics in self.device_pending)
        self.device_pending = []

    def last_train_loss(self) -> float:
        points = self.writer.history.get("train/loss")
        return points[-1][1] if points else float("nan")

    def evaluate(self, state: TrainState, val_source, step: int) -> None:
        """Evaluates on the validation split, logs the metrics (`val/<name>`) and the pass's
        seconds (`eval/seconds`) and keeps the metrics; writes them with the raw results
        into `workdir/eval/validation_step<step>/`."""
        if self.eval_compiled is not None:
            self.eval_compiled.result()
            self.eval_compiled = None
        results_dir = os.path.join(self.workdir, "eval", f"validation_step{step}")
        clock = time.perf_counter()
        self.eval_metrics, self.predictions = evaluate(
            self.steps, state, val_source, self.config, self.mesh, results_dir
        )
        # Undefined metrics (NaN, e.g. AP of a size range with no object) are not logged.
        defined = {f"val/{k}": v for k, v in self.eval_metrics.items() if np.isfinite(v)}
        defined["eval/seconds"] = time.perf_counter() - clock
        self.writer.write_scalars(step, defined)
        tqdm.write(f"step {step}: {self.steps.task.summary(self.eval_metrics)}")

    def save(self, state: TrainState, step: int, *, force: bool) -> None:
        self._fetch_pending()
        meta = {
            "train_seconds": self.timer.seconds,
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
        self.eval_compiled = compile_eval_in_background(
            self.steps, state, val_source, config, self.mesh
        )
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
        try:
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
                    tqdm.write(
                        f"Stop requested (SIGTERM): checkpointed step {step}; rerun to resume."
                    )
                    break
                if step % config.log_every_steps == 0:
                    interval_start = time.perf_counter()
        finally:
            batches.close()  # stops the input workers
        jax.block_until_ready(state)
        self.timer.stop()
        progress.close()
        is_done = int(sharding.to_host(state.step)) >= config.num_train_steps
        return state, not is_done
