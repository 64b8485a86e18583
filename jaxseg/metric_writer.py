"""Scalar metrics to TensorBoard event files and to `metrics.jsonl`, with a history for plots.

TensorBoard events are written with tensorboardX, which needs no TensorFlow. Every
`write_scalars` call also appends one line to `metrics.jsonl` in the work directory,
`{"step": 100, "train/loss": 0.52, ...}` (undefined values as `null`), from which a resumed
run reads the history back. Only the writing process (process 0 in multi-host runs)
touches the disk.
"""

import json
import math
import os
from typing import Mapping

from tensorboardX import SummaryWriter

History = dict[str, list[tuple[int, float]]]


def read_history(path: str, up_to_step: int) -> tuple[list[dict], History]:
    """The records of the JSON-lines file `path` at steps <= `up_to_step`, and the finite
    values in them by name, as `(step, value)` pairs in order. A missing file is empty."""
    if not os.path.exists(path):
        return [], {}
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    kept = [record for record in records if record["step"] <= up_to_step]
    history: History = {}
    for record in kept:
        for name, value in record.items():
            if name != "step" and value is not None and math.isfinite(value):
                history.setdefault(name, []).append((record["step"], value))
    return kept, history


class MetricWriter:
    """Writes scalars under `logdir` and to the JSON-lines file `history_path`, and remembers
    `(step, value)` per name (`history`).

    A resumed run passes the step it resumed from: the history is read back from
    `history_path` up to that step, and later lines (logged after the last checkpoint by a
    run that then crashed) are dropped from the file.
    """

    def __init__(self, logdir: str, history_path: str, *, enabled: bool, resume_step: int):
        self._writer = None
        self._lines = None
        self.history: History = {}
        if not enabled:
            return
        kept, self.history = read_history(history_path, resume_step)
        with open(history_path, "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in kept)
        self._lines = open(history_path, "a")
        self._writer = SummaryWriter(logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records the scalars at `step` (non-finite values are `null` in metrics.jsonl and
        are left out of `history`)."""
        record = {"step": int(step)}
        for name, value in scalars.items():
            value = float(value)
            record[name] = value if math.isfinite(value) else None
            if math.isfinite(value):
                self.history.setdefault(name, []).append((int(step), value))
        if self._writer is None:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(name, float(value), step)
        self._writer.flush()
        self._lines.write(json.dumps(record) + "\n")
        self._lines.flush()

    def close(self) -> None:
        """Flushes and closes the event file and metrics.jsonl."""
        if self._writer is not None:
            self._writer.close()
            self._lines.close()
