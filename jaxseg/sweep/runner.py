"""Training a sweep's runs in turn: finished runs are skipped, unfinished ones resume."""

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.errors import SweepError
from jaxseg.sweep.report import minutes
from jaxseg.sweep.results import RUN_RECORD, metric_value, read_json
from jaxseg.sweep.spec import Run, Sweep


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_run_directory(run: Run, directory: str) -> None:
    """Raises SweepError if `directory` already holds a run of another config."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return
    written = _flat(read_json(path))
    expected = _flat(json.loads(run.config.to_json_best_effort()))
    differing = sorted(
        k for k in written.keys() | expected.keys() if written.get(k) != expected.get(k)
    )
    if differing:
        raise SweepError(
            f"{directory} holds a run of another config (differs in {', '.join(differing)}); "
            "move it away or use another --workdir"
        )


def run_sweep(sweep: Sweep, runs: Sequence[Run], workdir: str) -> bool:
    """Trains every unfinished run in turn; returns whether all runs are finished.

    Prints one progress line per run. A run stopped by SIGTERM stops the sweep (False).
    """
    from jaxseg import train  # pylint: disable=g-import-not-at-top

    for run in runs:
        _check_run_directory(run, run.directory(workdir))
    trained_seconds: list[float] = []
    for index, run in enumerate(runs, 1):
        directory = run.directory(workdir)
        label = f"[{index}/{len(runs)}] {run.variant} seed {run.seed}"
        if os.path.exists(os.path.join(directory, "metrics.json")):
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
        remaining = sum(
            not os.path.exists(os.path.join(r.directory(workdir), "metrics.json")) for r in runs
        )
        estimate = (
            f"; {remaining} runs left, about {minutes(remaining * np.mean(trained_seconds))}"
        )
        print(
            f"{label}: done in {minutes(seconds)}: {values}{estimate if remaining else ''}",
            flush=True,
        )
    return True
