"""What a sweep is: the `Sweep` a sweep file returns, its checks, and the runs it resolves to."""

import dataclasses
import itertools
import os
import re
import runpy
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ml_collections

from jaxseg.config_files import load_config_file
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError, SweepError, did_you_mean
from jaxseg.sweep.overrides import apply_overrides

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._+-]+")


class Variant(NamedTuple):
    """One named set of dotted config overrides, e.g. `Variant("ce", {"loss.name": "ce"})`."""

    name: str
    overrides: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What a sweep file's `get_sweep()` returns; see the `jaxseg.sweep` docstring.

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


def run_name(variant: str, seed: int) -> str:
    """`<variant>/seed<k>`: a run's name for `--run`, and its directory under the workdir."""
    return f"{variant}/seed{seed}"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep: a variant at one seed, and its resolved config."""

    variant: str
    seed: int
    overrides: dict[str, Any]
    config: ml_collections.ConfigDict

    @property
    def name(self) -> str:
        """The run's `run_name`, e.g. `ce/seed0`."""
        return run_name(self.variant, self.seed)

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


def find_run(runs: Sequence[Run], name: str) -> Run:
    """The run of `runs` named `name` (`<variant>/seed<k>`).

    Raises:
      SweepError: no run has that name; the message lists the names there are.
    """
    names = [run.name for run in runs]
    if name not in names:
        raise SweepError(
            f"unknown run {name!r}{did_you_mean(name, names)}; the runs are {', '.join(names)}"
        )
    return runs[names.index(name)]
