"""`results.png`: the per-variant summary of a sweep as bar charts."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.sweep.spec import Sweep


def write_chart(path: str, sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> None:
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
