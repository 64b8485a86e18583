"""Sweeps: one experiment file, its variants x seeds trained in turn, one results table.

Command line::

    python -m jaxseg.sweep experiments/NAME.py --workdir=DIR   # run all, then tabulate
    python -m jaxseg.sweep experiments/NAME.py --print         # list the runs only
    python -m jaxseg.sweep experiments/NAME.py --print_commands [--workdir=DIR]
    python -m jaxseg.sweep experiments/NAME.py --workdir=DIR --run=NAME/seedK
    python -m jaxseg.sweep experiments/NAME.py --workdir=DIR --report

`--print_commands` prints one command per run (`... --run=<variant>/seed<k>`; the workdir
defaults to `runs/<sweep file name>`), e.g. for the tasks of a cluster job array; each
trains just that run. `--report` tabulates the finished runs and trains nothing.

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
(sequentially, in one process, or one run per `--run`). A run is finished when its
directory holds `metrics.json` and a `config.json` of the run's own config; a finished
run is skipped, an unfinished one resumes from its checkpoints. A run directory holding
another config (`jaxseg.config_files.check_workdir_config`) stops the sweep before
anything trains. After a run ends, the runner writes `sweep_run.json` (its wall time)
next to `metrics.json`. After all runs (not after `--run`), and with `--report`, it
writes into `DIR` the tables of the runs finished so far:

- `results.csv`: one row per variant: `variant`, `num_seeds` (finished), `missing_seeds`,
  `<metric>_mean` and `<metric>_std` (sample standard deviation over seeds, NaN for a
  single seed) for each metric, and `wall_seconds` summed over the seeds;
- `results.md`: the sweep file's docstring, how many runs finished and which are missing,
  the table as mean ± std, every finished run's values, the budget and the total wall time;
- `results.png`: one bar chart per metric of `chart_metrics`, error bars one std.

A bad sweep file (unknown override path, no variants, duplicate or unsafe names, ...)
stops before any training with an error naming the problem; every run's config is
also checked with `jaxseg.config_validation.validate_config` first.

Modules: `spec` (the `Sweep`, its checks and runs), `overrides` (dotted overrides),
`runner` (training the runs), `results` (reading finished runs), `report` and `chart`
(the results files), `cli` (the command line).
"""

from jaxseg.errors import SweepError
from jaxseg.sweep.cli import describe, main, run_commands
from jaxseg.sweep.overrides import apply_overrides
from jaxseg.sweep.report import missing_runs, write_results
from jaxseg.sweep.results import (
    DERIVED_METRICS,
    RUN_RECORD,
    RunResult,
    collect_results,
    is_finished,
    metric_value,
    summarize,
)
from jaxseg.sweep.runner import check_run_directories, run_sweep
from jaxseg.sweep.spec import (
    REPOSITORY_ROOT,
    Run,
    Sweep,
    Variant,
    find_run,
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
    "find_run",
    "is_finished",
    "load_sweep",
    "main",
    "metric_value",
    "missing_runs",
    "product",
    "resolve_runs",
    "run_commands",
    "run_sweep",
    "summarize",
    "variants_of",
    "write_results",
]
