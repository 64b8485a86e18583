"""Scalar metrics to TensorBoard event files, with a history kept for plots.

TensorBoard events are written with tensorboardX, which needs no TensorFlow.
Only the writing process (process 0 in multi-host runs) touches the disk.
"""

import math
from typing import Mapping, Optional

from tensorboardX import SummaryWriter

History = dict[str, list[tuple[int, float]]]


class MetricWriter:
    """Writes scalars under `logdir` and remembers `(step, value)` per name."""

    def __init__(self, logdir: str, *, enabled: bool = True, history: Optional[History] = None):
        self._writer = SummaryWriter(logdir) if enabled else None
        self.history: History = {
            name: [tuple(point) for point in points] for name, points in (history or {}).items()
        }

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records each finite scalar at `step` (non-finite values go to TensorBoard only)."""
        for name, value in scalars.items():
            value = float(value)
            if self._writer is not None:
                self._writer.add_scalar(name, value, step)
            if math.isfinite(value):
                self.history.setdefault(name, []).append((int(step), value))
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()
