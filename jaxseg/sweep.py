"""Sweeps: one experiment file, its variants x seeds trained in turn, one results table.

Command line::

    python -m jaxseg.sweep experiments/NAME.py --workdir=DIR   # run, then tabulate
    python -m jaxseg.sweep experiments/NAME.py --print         # list the runs only

A sweep file is a Python file whose `get_sweep()` returns a `Sweep`::

    from jaxseg.sweep import Sweep

    def get_sweep() -> Sweep:
        return Sweep(
            config="configs/unet_shapes.py",  # relative to the repository root
            overrides={"num_train_steps": 500},  # dotted config paths, for every run
            variants={"ce": {"loss.name": "ce"}, "dice": {"loss.name": "dice"}},
            seeds=(0, 1, 2),  # each run sets config.seed
            metrics=("foreground_iou", "miou"),
            budget="12 minutes on 2 CPU cores",
        )

`variants` is a mapping of name -> overrides or a sequence of `Variant`s (`product` builds
the variants of a grid). A variant's overrides apply after the sweep's `overrides`. Names
may use letters, digits and `.`, `_`, `+`, `-`; they name sub-directories. `metrics` are
keys of the runs' `metrics.json` or the derived `foreground_iou` and `foreground_dice`:
the mean of `iou/<class>` (`dice/<class>`) over the classes after the first
(background), skipping undefined (NaN) values.

Each run trains with `jaxseg.train.train_and_evaluate` into `DIR/<variant>/seed<k>`
(sequentially, in one process). A run whose `metrics.json` exists is finished and
skipped; an unfinished one resumes from its checkpoints; a run directory holding another
config stops the sweep with an error. After the run ends, the runner writes
`sweep_run.json` (its wall time) next to `metrics.json`. When every run is finished,
the runner writes into `DIR`:

- `results.csv`: one row per variant: `variant`, `num_seeds`, `<metric>_mean` and
  `<metric>_std` (sample standard deviation over seeds, NaN for a single seed) for each
  metric, and `wall_seconds` summed over the seeds;
- `results.md`: the sweep file's docstring, the table as mean ± std, every run's values,
  the budget and the total wall time;
- `results.png`: one bar chart per metric of `chart_metrics`, error bars one std.

A bad sweep file (unknown override path, no variants, duplicate or unsafe names, ...)
stops before any training with an error naming the problem; every run's config is
also checked with `jaxseg.config_validation.validate_config` first.
"""

import argparse
import csv
import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import runpy
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from jaxseg.config_files import load_config_file
from jaxseg.config_validation import ConfigError, validate_config

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Derived metrics: name -> the per-class metrics.json prefix they average over foreground.
DERIVED_METRICS = {"foreground_iou": "iou", "foreground_dice": "dice"}
RUN_RECORD = "sweep_run.json"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._+-]+")


class SweepError(ValueError):
    """The sweep file or the sweep's work directory is not usable as it is."""


class Variant(NamedTuple):
    """One named set of dotted config overrides, e.g. `Variant("ce", {"loss.name": "ce"})`."""

    name: str
    overrides: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What a sweep file's `get_sweep()` returns; see the module docstring.

    Attributes:
      config: the base config file (`get_config()`), absolute or relative to the
        repository root.
      variants: name -> dotted overrides, or a sequence of `Variant`s.
      metrics: metric names tabulated (metrics.json keys or `DERIVED_METRICS`).
      seeds: the `config.seed` of each variant's runs.
      overrides: dotted overrides applied to every run before the variant's.
      chart_metrics: the metrics charted in `results.png` (default: `metrics`).
      budget: the time the sweep is sized for, stated in `results.md`.
      description: the text atop `results.md` (default: the sweep file's docstring).
    """

    config: str
    variants: Any
    metrics: Sequence[str]
    seeds: Sequence[int] = (0,)
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    chart_metrics: Sequence[str] | None = None
    budget: str = "not stated"
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep: a variant at one seed, and its resolved config."""

    variant: str
    seed: int
    overrides: dict[str, Any]
    config: ml_collections.ConfigDict

    def directory(self, workdir: str) -> str:
        """`workdir/<variant>/seed<k>`, where the run trains."""
        return os.path.join(workdir, self.variant, f"seed{self.seed}")


def product(*axes: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    """The variants of a grid: every combination of one entry per axis.

    Args:
      *axes: each a mapping of name -> dotted overrides, e.g. `{"ce": {"loss.name":
        "ce"}, "dice": {...}}`.

    Returns:
      `Variant`s named by their entries' names joined with "-", overrides merged in
      axis order (a later axis wins on a shared path).
    """
    return [
        Variant("-".join(name for name, _ in combination), _merged(o for _, o in combination))
        for combination in itertools.product(*(list(axis.items()) for axis in axes))
    ]


def _merged(overrides) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in overrides:
        merged.update(part)
    return merged


def load_sweep(path: str) -> Sweep:
    """Runs the sweep file at `path` and returns its checked `get_sweep()`."""
    if not os.path.isfile(path):
        raise SweepError(f"sweep file {path} not found")
    namespace = runpy.run_path(path)
    if "get_sweep" not in namespace:
        raise SweepError(f"sweep file {path} defines no get_sweep()")
    sweep = namespace["get_sweep"]()
    if not isinstance(sweep, Sweep):
        raise SweepError(f"get_sweep() of {path} returned {type(sweep).__name__}, not a Sweep")
    _check_sweep(sweep)
    if not sweep.description:
        sweep = dataclasses.replace(sweep, description=(namespace.get("__doc__") or "").strip())
    return sweep


def variants_of(sweep: Sweep) -> list[Variant]:
    """The sweep's variants as a list of `Variant`s, in order."""
    if isinstance(sweep.variants, Mapping):
        return [Variant(name, overrides) for name, overrides in sweep.variants.items()]
    return [Variant(*variant) for variant in sweep.variants]


def _check_sweep(sweep: Sweep) -> None:
    """Raises SweepError naming the first problem of the sweep's fields."""
    variants = variants_of(sweep)
    if not variants:
        raise SweepError("the sweep has no variants")
    names = [variant.name for variant in variants]
    for name in names:
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise SweepError(
                f"variant name {name!r} must be non-empty letters, digits, '.', '_', '+', '-'"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SweepError(f"duplicate variant name(s): {', '.join(duplicates)}")
    seeds = list(sweep.seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepError(f"seeds must be a non-empty sequence of ints, got {sweep.seeds!r}")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SweepError(f"seeds must be distinct non-negative ints, got {sweep.seeds!r}")
    for name, overrides in [("the sweep's overrides", sweep.overrides)] + [
        (f"variant {v.name}", v.overrides) for v in variants
    ]:
        if not isinstance(overrides, Mapping):
            raise SweepError(f"{name} must be a mapping of dotted path -> value")
        if "seed" in overrides:
            raise SweepError(f"{name} sets 'seed': list seeds in Sweep.seeds instead")
    if not sweep.metrics or isinstance(sweep.metrics, str):
        raise SweepError(f"metrics must be a non-empty sequence of names, got {sweep.metrics!r}")
    missing = set(sweep.chart_metrics or ()) - set(sweep.metrics)
    if missing:
        raise SweepError(f"chart_metrics {sorted(missing)} are not among metrics")


def _unknown_path(path: str, depth: int, node: Any) -> SweepError:
    """The error for override `path` whose part `depth` is not a field of `node`."""
    parts = path.split(".")
    known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    close = difflib.get_close_matches(parts[depth], known, n=1)
    hint = f" (did you mean '{'.'.join([*parts[:depth], close[0]])}'?)" if close else ""
    missing = ".".join(parts[: depth + 1])
    return SweepError(f"unknown override path '{path}': config.{missing} does not exist{hint}")


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets each dotted `path` of `overrides` in `config` (in place); returns `config`.

    Raises:
      SweepError: a path that is not an existing field (with the closest names), a path
        to a whole section, or a value of the wrong type for the field.
    """
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for depth, part in enumerate([*parents, leaf]):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise _unknown_path(path, depth, node)
            if depth < len(parents):
                node = node[part]
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise SweepError(f"override path '{path}' is a config section, not a field")
        try:
            node[leaf] = value
        except TypeError as error:
            raise SweepError(f"override {path}={value!r}: {error}") from error
    return config


def resolve_runs(sweep: Sweep) -> list[Run]:
    """Every run of the sweep (variants in order, then seeds) with its checked config.

    Raises:
      SweepError: a bad override path or value.
      ConfigError: a resolved config `validate_config` rejects.
    """
    path = os.path.join(REPOSITORY_ROOT, sweep.config)
    runs = []
    for variant in variants_of(sweep):
        overrides = {**sweep.overrides, **variant.overrides}
        for seed in sweep.seeds:
            config = apply_overrides(load_config_file(path), {**overrides, "seed": seed})
            try:
                validate_config(config)
            except ConfigError as error:
                raise ConfigError(f"variant {variant.name}: {error}") from error
            runs.append(Run(variant.name, seed, overrides, config))
    return runs


def metric_value(metrics: Mapping[str, Any], name: str, class_names: Sequence[str]) -> float:
    """The metric `name` of a run's `metrics.json` dict, derived metrics included.

    Args:
      metrics: the flat dict of metrics.json.
      name: a key of it, or a `DERIVED_METRICS` name.
      class_names: the run's `config.data.class_names`; the first is background.

    Returns:
      A float (NaN where undefined).

    Raises:
      SweepError: the metric is neither in `metrics` nor derivable from it.
    """
    if name in DERIVED_METRICS:
        keys = [f"{DERIVED_METRICS[name]}/{class_name}" for class_name in class_names[1:]]
        missing = [key for key in keys if key not in metrics]
        if missing:
            raise SweepError(f"metric {name} needs {', '.join(missing)}, not in metrics.json")
        values = np.array([metrics[key] for key in keys], np.float64)
        values = values[~np.isnan(values)]
        return float(np.mean(values)) if values.size else math.nan
    if name not in metrics:
        raise SweepError(
            f"metric {name} is not in metrics.json (it has {', '.join(sorted(metrics))})"
        )
    return float(metrics[name])


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


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
    written = _flat(_read_json(path))
    expected = _flat(json.loads(run.config.to_json_best_effort()))
    differing = sorted(
        k for k in written.keys() | expected.keys() if written.get(k) != expected.get(k)
    )
    if differing:
        raise SweepError(
            f"{directory} holds a run of another config (differs in {', '.join(differing)}); "
            "move it away or use another --workdir"
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


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
            f"; {remaining} runs left, about {_minutes(remaining * np.mean(trained_seconds))}"
        )
        print(
            f"{label}: done in {_minutes(seconds)}: {values}{estimate if remaining else ''}",
            flush=True,
        )
    return True


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The tabulated metrics and wall time (NaN if unrecorded) of one finished run."""

    variant: str
    seed: int
    values: dict[str, float]
    wall_seconds: float


def collect_results(sweep: Sweep, runs: Sequence[Run], workdir: str) -> list[RunResult]:
    """The metrics of every finished run, read from its directory under `workdir`."""
    results = []
    for run in runs:
        directory = run.directory(workdir)
        metrics = _read_json(os.path.join(directory, "metrics.json"))
        record_path = os.path.join(directory, RUN_RECORD)
        wall = _read_json(record_path)["wall_seconds"] if os.path.exists(record_path) else math.nan
        values = {
            name: metric_value(metrics, name, run.config.data.class_names) for name in sweep.metrics
        }
        results.append(RunResult(run.variant, run.seed, values, float(wall)))
    return results


def summarize(sweep: Sweep, results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per variant (in sweep order): mean and sample std over seeds of each metric.

    Returns:
      dicts with `variant`, `num_seeds`, `<metric>_mean`, `<metric>_std` (NaN for one
      seed) and `wall_seconds` (the sum over seeds).
    """
    rows = []
    for variant in variants_of(sweep):
        mine = [result for result in results if result.variant == variant.name]
        row: dict[str, Any] = {"variant": variant.name, "num_seeds": len(mine)}
        for name in sweep.metrics:
            values = np.array([result.values[name] for result in mine], np.float64)
            row[f"{name}_mean"] = float(np.mean(values))
            row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        row["wall_seconds"] = float(sum(result.wall_seconds for result in mine))
        rows.append(row)
    return rows


def _mean_std(row: Mapping[str, Any], name: str) -> str:
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(line) + " |" for line in lines),
    ]


def write_results(
    sweep: Sweep, title: str, results: Sequence[RunResult], workdir: str
) -> list[dict[str, Any]]:
    """Writes `results.csv`, `results.md` (headed `title`) and `results.png` into `workdir`.

    Returns:
      The rows of `summarize`.
    """
    rows = summarize(sweep, results)
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    total = sum(result.wall_seconds for result in results)
    lines = [f"# {title}", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    lines += [
        (
            f"Base config `{sweep.config}`; seeds {', '.join(map(str, sweep.seeds))}; "
            "mean ± sample std over seeds."
        ),
        "",
        *_markdown_table(
            ["variant", "seeds", *sweep.metrics],
            [
                [row["variant"], str(row["num_seeds"]), *(_mean_std(row, m) for m in sweep.metrics)]
                for row in rows
            ],
        ),
        "",
        f"Budget: {sweep.budget}.",
        f"Total wall time: {_minutes(total)} (runs: {len(results)}).",
        "",
        "![results](results.png)",
        "",
        "## Runs",
        "",
        *_markdown_table(
            ["variant", "seed", *sweep.metrics, "wall time"],
            [
                [
                    r.variant,
                    str(r.seed),
                    *(f"{r.values[m]:.4f}" for m in sweep.metrics),
                    _minutes(r.wall_seconds),
                ]
                for r in results
            ],
        ),
        "",
    ]
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("\n".join(lines))
    _write_chart(os.path.join(workdir, "results.png"), sweep, rows)
    return rows


def _write_chart(path: str, sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> None:
    """One bar chart per charted metric: a bar per variant, error bars one std."""
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

    charted = list(sweep.chart_metrics or sweep.metrics)
    names = [row["variant"] for row in rows]
    figure, axes = plt.subplots(
        1, len(charted), figsize=(1.0 + 0.8 * len(names) * len(charted), 3.5), squeeze=False
    )
    for axis, metric in zip(axes[0], charted):
        means = [row[f"{metric}_mean"] for row in rows]
        stds = np.nan_to_num([row[f"{metric}_std"] for row in rows])
        axis.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue")
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
        axis.set_title(metric)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def describe(sweep: Sweep, runs: Sequence[Run], sweep_path: str) -> str:
    """The `--print` listing: each variant with its seeds and resolved overrides."""
    variants = variants_of(sweep)
    lines = [
        (
            f"{sweep_path}: {len(variants)} variants x {len(sweep.seeds)} seeds = "
            f"{len(runs)} runs of {sweep.config}"
        ),
        f"metrics: {', '.join(sweep.metrics)}",
        f"budget: {sweep.budget}",
    ]
    for variant in variants:
        overrides = {**sweep.overrides, **variant.overrides}
        lines.append(f"{variant.name} (seeds {', '.join(map(str, sweep.seeds))}):")
        lines += [f"  {path} = {value!r}" for path, value in overrides.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("sweep_file", help="experiments/NAME.py defining get_sweep()")
    parser.add_argument("--workdir", help="directory of the runs and the results")
    parser.add_argument(
        "--print", action="store_true", help="list the variants and their overrides; run nothing"
    )
    args = parser.parse_args(argv)
    if not args.print and not args.workdir:
        parser.error("--workdir is required unless --print is given")
    try:
        sweep = load_sweep(args.sweep_file)
        runs = resolve_runs(sweep)
        if args.print:
            print(describe(sweep, runs, args.sweep_file))
            return 0
        os.makedirs(args.workdir, exist_ok=True)
        if not run_sweep(sweep, runs, args.workdir):
            return 0
        results = collect_results(sweep, runs, args.workdir)
        write_results(sweep, f"Sweep {args.sweep_file}", results, args.workdir)
    except (SweepError, ConfigError) as error:
        print(f"Invalid sweep {args.sweep_file}: {error}", file=sys.stderr)
        return 2
    print(f"Results: {os.path.join(args.workdir, 'results.md')}")
    return 0


if __name__ == "__main__":
    # Sweep files import `jaxseg.sweep`: let that name be this module, so they share `Sweep`.
    sys.modules.setdefault("jaxseg.sweep", sys.modules[__name__])
    sys.exit(main())
