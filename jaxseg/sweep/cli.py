"""The command line `python -m jaxseg.sweep` (see the `jaxseg.sweep` docstring)."""

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from jaxseg.errors import ConfigError, SweepError, WorkdirError
from jaxseg.sweep.report import missing_runs, write_results
from jaxseg.sweep.results import collect_results
from jaxseg.sweep.runner import run_sweep
from jaxseg.sweep.spec import Run, Sweep, find_run, load_sweep, resolve_runs, variants_of


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


def command(sweep_path: str, workdir: str, flag: str) -> str:
    """The shell command `python -m jaxseg.sweep FILE --workdir=DIR <flag>`."""
    quoted = shlex.quote(sweep_path)
    return f"python -m jaxseg.sweep {quoted} --workdir={shlex.quote(workdir)} {flag}"


def run_commands(runs: Sequence[Run], sweep_path: str, workdir: str) -> list[str]:
    """The `--print_commands` listing: per run, the shell command that runs just that run."""
    return [command(sweep_path, workdir, f"--run={run.name}") for run in runs]


def default_workdir(sweep_path: str) -> str:
    """`runs/<the sweep file's name>`: the `--print_commands` workdir unless one is given."""
    return os.path.join("runs", os.path.splitext(os.path.basename(sweep_path))[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.sweep",
        description="Sweeps: one experiment file, its variants x seeds trained, one results table.",
    )
    parser.add_argument("sweep_file", help="experiments/NAME.py defining get_sweep()")
    parser.add_argument("--workdir", help="directory of the runs and the results")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--print", action="store_true", help="list the variants and their overrides; run nothing"
    )
    action.add_argument(
        "--print_commands",
        action="store_true",
        help="print one shell command per run, each running just that run (for a job array); "
        "--workdir defaults to runs/<sweep file name>",
    )
    action.add_argument(
        "--run", metavar="NAME/seedK", help="train just this run, into WORKDIR/NAME/seedK"
    )
    action.add_argument(
        "--report", action="store_true", help="write the tables of the finished runs; train nothing"
    )
    return parser


def _tabulate(sweep: Sweep, runs: Sequence[Run], sweep_path: str, workdir: str) -> None:
    """Writes the results files of the finished runs and says where, and what is missing."""
    results = collect_results(sweep, runs, workdir)
    write_results(sweep, f"Sweep {sweep_path}", results, workdir)
    missing = missing_runs(sweep, results)
    note = f" ({len(missing)} of {len(runs)} runs missing: {', '.join(missing)})" if missing else ""
    print(f"Results: {os.path.join(workdir, 'results.md')}{note}")


def _act(args: argparse.Namespace, sweep: Sweep, runs: list[Run]) -> None:
    """Does what the flags ask of the loaded sweep."""
    if args.print:
        print(describe(sweep, runs, args.sweep_file))
    elif args.print_commands:
        workdir = args.workdir or default_workdir(args.sweep_file)
        print("\n".join(run_commands(runs, args.sweep_file, workdir)))
    elif args.run:
        if run_sweep(sweep, [find_run(runs, args.run)], args.workdir):
            report = command(args.sweep_file, args.workdir, "--report")
            print(f"Tabulate the finished runs: {report}")
    elif args.report:
        if not os.path.isdir(args.workdir):
            raise SweepError(f"--workdir {args.workdir} does not exist: no run has started")
        _tabulate(sweep, runs, args.sweep_file, args.workdir)
    elif run_sweep(sweep, runs, args.workdir):
        _tabulate(sweep, runs, args.sweep_file, args.workdir)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the `jaxseg.sweep` docstring); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.print or args.print_commands or args.workdir):
        parser.error("--workdir is required unless --print or --print_commands is given")
    try:
        sweep = load_sweep(args.sweep_file)
        runs = resolve_runs(sweep)
    except (SweepError, ConfigError) as error:
        print(f"Invalid sweep {args.sweep_file}: {error}", file=sys.stderr)
        return 2
    try:
        _act(args, sweep, runs)
    except (SweepError, WorkdirError) as error:
        print(f"Sweep {args.sweep_file}: {error}", file=sys.stderr)
        return 2
    return 0
