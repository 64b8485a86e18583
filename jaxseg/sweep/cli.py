"""The command line `python -m jaxseg.sweep` (see the `jaxseg.sweep` docstring)."""

import argparse
import os
import sys
from collections.abc import Sequence

from jaxseg.errors import ConfigError, SweepError, WorkdirError
from jaxseg.sweep.report import write_results
from jaxseg.sweep.results import collect_results
from jaxseg.sweep.runner import run_sweep
from jaxseg.sweep.spec import Run, Sweep, load_sweep, resolve_runs, variants_of


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
    """The command line (see the `jaxseg.sweep` docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.sweep",
        description="Sweeps: one experiment file, its variants x seeds trained, one results table.",
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
    except WorkdirError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"Results: {os.path.join(args.workdir, 'results.md')}")
    return 0
