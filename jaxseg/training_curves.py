"""Training curves as a PNG: one subplot per metric, drawn by matplotlib through its Agg
canvas (no pyplot, no GUI)."""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxseg import visualize

_CURVE_WIDTH_INCHES = 6.0
_CURVE_HEIGHT_INCHES = 2.5
_CURVE_DPI = 100


def save_training_curves(path, history):
    """Writes a PNG with one subplot per metric, stacked vertically, value against step.

    The picture is 600 pixels wide and 250 pixels high per metric.

    Args:
      path: output PNG path (parent directories are created).
      history: dict name -> sequence of (step, value) pairs, e.g.
        {"train_loss": [(0, 1.2), (50, 0.4)], "val_miou": [(100, 0.8)]}.
        A metric with no pairs yet gets an empty subplot.
    """
    if not history:
        raise ValueError("history must name at least one metric")
    series = {}
    for name, pairs in history.items():
        message = f"history[{name!r}] must be a sequence of (step, value) pairs"
        try:
            points = np.asarray(pairs, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(message) from error
        if points.size == 0:
            points = points.reshape(0, 2)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(message)
        series[name] = points

    figure = Figure(figsize=(_CURVE_WIDTH_INCHES, _CURVE_HEIGHT_INCHES * len(series)), dpi=_CURVE_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    for ax, (name, points) in zip(axes, series.items()):
        ax.plot(points[:, 0], points[:, 1], marker="." if len(points) < 50 else None)
        if len(points) == 0:
            ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    visualize.make_parent_directory(path)
    figure.savefig(path, format="png", dpi=_CURVE_DPI)
