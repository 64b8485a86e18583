"""Reading a sweep's finished runs: their metrics, wall times, and the per-variant summary."""

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.config_files import config_differences
from jaxseg.errors import SweepError
from jaxseg.sweep.spec import Run, Sweep, variants_of

# Derived metrics: name -> the per-class metrics.json prefix they average over foreground.
DERIVED_METRICS = {"foreground_iou": "iou", "foreground_dice": "dice"}
METRICS_FILE = "metrics.json"
RUN_RECORD = "sweep_run.json"


def _number(value: Any) -> float:
    """A metrics.json value as a float: `null` (an undefined metric) is NaN."""
    return math.nan if value is None else float(value)


def metric_value(metrics: Mapping[str, Any], name: str, class_names: Sequence[str]) -> float:
    """The metric `name` of a run's `metrics.json` dict, derived metrics included.

    Args:
      metrics: the flat dict of metrics.json (`None` for an undefined metric, as
        metrics.json stores it: `null`).
      name: a key of it, or a `DERIVED_METRICS` name.
      class_names: the run's `config.data.class_names`; the first is background.

    Returns:
      A float (NaN where undefined); a derived metric skips undefined classes.

    Raises:
      SweepError: the metric is neither in `metrics` nor derivable from it.
    """
    if name in DERIVED_METRICS:
        keys = [f"{DERIVED_METRICS[name]}/{class_name}" for class_name in class_names[1:]]
        missing = [key for key in keys if key not in metrics]
        if missing:
            raise SweepError(f"metric {name} needs {', '.join(missing)}, not in metrics.json")
        values = np.array([_number(metrics[key]) for key in keys], np.float64)
        values = values[~np.isnan(values)]
        return float(np.mean(values)) if values.size else math.nan
    if name not in metrics:
        raise SweepError(
            f"metric {name} is not in metrics.json (it has {', '.join(sorted(metrics))})"
        )
    return _number(metrics[name])


def read_json(path: str) -> dict:
    """The JSON object stored at `path`."""
    with open(path) as f:
        return json.load(f)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The tabulated metrics and wall time (NaN if unrecorded) of one finished run."""

    variant: str
    seed: int
    values: dict[str, float]
    wall_seconds: float


def is_finished(run: Run, workdir: str) -> bool:
    """Whether `run` has finished: its directory holds a `metrics.json` and, if it holds a
    `config.json`, that is the run's config (a change to `num_train_steps`, say, makes a
    finished run unfinished: it resumes to the new end)."""
    directory = run.directory(workdir)
    if not os.path.exists(os.path.join(directory, METRICS_FILE)):
        return False
    config_path = os.path.join(directory, "config.json")
    return not os.path.exists(config_path) or not config_differences(
        read_json(config_path), run.config
    )


def collect_results(sweep: Sweep, runs: Sequence[Run], workdir: str) -> list[RunResult]:
    """The metrics of those of `runs` that have finished, read from their directories."""
    results = []
    for run in runs:
        if not is_finished(run, workdir):
            continue
        directory = run.directory(workdir)
        metrics = read_json(os.path.join(directory, METRICS_FILE))
        record_path = os.path.join(directory, RUN_RECORD)
        wall = read_json(record_path)["wall_seconds"] if os.path.exists(record_path) else math.nan
        values = {
            name: metric_value(metrics, name, run.config.data.class_names) for name in sweep.metrics
        }
        results.append(RunResult(run.variant, run.seed, values, float(wall)))
    return results


def summarize(sweep: Sweep, results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per variant (in sweep order): mean and sample std over its finished seeds.

    Returns:
      dicts with `variant`, `num_seeds` (the finished ones), `missing_seeds` (the others,
      space-separated), `<metric>_mean` (NaN for no seed), `<metric>_std` (NaN for fewer
      than two) and `wall_seconds` (the sum over seeds).
    """
    rows = []
    for variant in variants_of(sweep):
        mine = [result for result in results if result.variant == variant.name]
        finished = {result.seed for result in mine}
        row: dict[str, Any] = {
            "variant": variant.name,
            "num_seeds": len(mine),
            "missing_seeds": " ".join(str(s) for s in sweep.seeds if s not in finished),
        }
        for name in sweep.metrics:
            values = np.array([result.values[name] for result in mine], np.float64)
            row[f"{name}_mean"] = float(np.mean(values)) if values.size else math.nan
            row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        row["wall_seconds"] = float(sum(result.wall_seconds for result in mine))
        rows.append(row)
    return rows
