"""Training a sweep's runs in turn: finished runs are skipped, unfinished ones resume."""

import json
import os
import time
from collections.abc import Sequence

import numpy as np

from jaxseg.config_files import check_workdir_config
from jaxseg.sweep.report import minutes
from jaxseg.sweep.results import RUN_RECORD, is_finished, metric_value
from jaxseg.sweep.spec import Run, Sweep


def check_run_directories(runs: Sequence[Run], workdir: str) -> None:
    """Raises WorkdirError if the directory of any of `runs` holds a run of another config.

    `train.train_and_evaluate` checks its own directory too; checking all of them first
    stops the sweep before anything trains.
    """
    for run in runs:
        check_workdir_config(run.config, run.directory(workdir))


def run_sweep(sweep: Sweep, runs: Sequence[Run], workdir: str) -> bool:
    """Trains every unfinished run of `runs` in turn; returns whether they all finished.

    Prints one progress line per run. A run stopped by SIGTERM stops the sweep (False).

    Raises:
      WorkdirError: a run's directory holds a run of another config (before any training).
    """
    from jaxseg import train  # pylint: disable=g-import-not-at-top

    check_run_directories(runs, workdir)
    trained_seconds: list[float] = []
    for index, run in enumerate(runs, 1):
        directory = run.directory(workdir)
        label = f"[{index}/{len(runs)}] {run.variant} seed {run.seed}"
        if is_finished(run, workdir):
            print(f"{label}: finished earlier, skipped ({directory})", flush=True)
            continue
        print(f"{label}: training in {directory}", flush=True)
        start = time.perf_counter()
        result = train.train_and_evaluate(run.config, directory)
        if result.get("preempted"):
            print(f"{label}: stopped (SIGTERM); rerun the sweep to resume", flush=True)
            return False
        seconds = time.perf_counter() - start
        with open(os.path.join(directory, RUN_RECORD), "w") as f:
            json.dump({"wall_seconds": seconds}, f)
        trained_seconds.append(seconds)
        values = ", ".join(
            f"{name} {metric_value(result, name, run.config.data.class_names):.4f}"
            for name in sweep.metrics
        )
        remaining = sum(not is_finished(r, workdir) for r in runs)
        estimate = (
            f"; {remaining} runs left, about {minutes(remaining * np.mean(trained_seconds))}"
        )
        print(
            f"{label}: done in {minutes(seconds)}: {values}{estimate if remaining else ''}",
            flush=True,
        )
    return True
