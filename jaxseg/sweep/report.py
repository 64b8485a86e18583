"""A sweep's tables: `results.csv` and `results.md` (and the chart) from its finished runs."""

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from jaxseg.sweep.chart import write_chart
from jaxseg.sweep.results import RunResult, summarize
from jaxseg.sweep.spec import Sweep, run_name, variants_of


def minutes(seconds: float) -> str:
    """`seconds` as minutes with one decimal, e.g. "2.5 min"."""
    return f"{seconds / 60:.1f} min"


def missing_runs(sweep: Sweep, results: Sequence[RunResult]) -> list[str]:
    """The names (`<variant>/seed<k>`) of the sweep's runs that `results` lack, in order."""
    finished = {(result.variant, result.seed) for result in results}
    return [
        run_name(variant.name, seed)
        for variant in variants_of(sweep)
        for seed in sweep.seeds
        if (variant.name, seed) not in finished
    ]


def _progress(sweep: Sweep, results: Sequence[RunResult]) -> str:
    """The line saying that all runs finished, or how many did and which are missing."""
    missing = missing_runs(sweep, results)
    total = len(results) + len(missing)
    if not missing:
        return f"All {total} runs finished."
    return (
        f"Partial results: {len(results)} of {total} runs finished; "
        f"{len(missing)} missing: {', '.join(missing)}."
    )


def _mean_std(row: Mapping[str, Any], name: str) -> str:
    if not row["num_seeds"]:
        return "–"
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

    `results` are the finished runs; `results.md` names the sweep's runs they lack.

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
        _progress(sweep, results),
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
        f"Total wall time: {minutes(total)} (runs: {len(results)}).",
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
                    minutes(r.wall_seconds),
                ]
                for r in results
            ],
        ),
        "",
    ]
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("\n".join(lines))
    write_chart(os.path.join(workdir, "results.png"), sweep, rows)
    return rows
