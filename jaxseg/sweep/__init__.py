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
(background), skipping undefined values (NaN; `null` in metrics.json).

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

Modules: `spec` (the `Sweep`, its checks and runs), `overrides` (dotted overrides),
`runner` (training the runs), `results` (reading finished runs), `report` and `chart`
(the results files), `cli` (the command line).
"""

from jaxseg.errors import SweepError
from jaxseg.sweep.cli import describe, main
from jaxseg.sweep.overrides import apply_overrides
from jaxseg.sweep.report import write_results
from jaxseg.sweep.results import (
    DERIVED_METRICS,
    RUN_RECORD,
    RunResult,
    collect_results,
    metric_value,
    summarize,
)
from jaxseg.sweep.runner import check_run_directories, run_sweep
from jaxseg.sweep.spec import (
    REPOSITORY_ROOT,
    Run,
    Sweep,
    Variant,
    load_sweep,
    product,
    resolve_runs,
    variants_of,
)

__all__ = [
    "DERIVED_METRICS",
    "REPOSITORY_ROOT",
    "RUN_RECORD",
    "Run",
    "RunResult",
    "Sweep",
    "SweepError",
    "Variant",
    "apply_overrides",
    "check_run_directories",
    "collect_results",
    "describe",
    "load_sweep",
    "main",
    "metric_value",
    "product",
    "resolve_runs",
    "run_sweep",
    "summarize",
    "variants_of",
    "write_results",
]
