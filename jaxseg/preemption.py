"""Graceful stops: SIGTERM (what cluster schedulers send before preempting) ends training cleanly.

While a `PreemptionWatcher` is active, SIGTERM only sets a flag; the training
loop polls `stop_requested()` after every step, writes a checkpoint and
returns. In multi-process runs every process stops at the same step: the flag
is OR-ed across processes.
"""

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Context manager turning SIGTERM into a polled stop request."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._signals = signals
        self._requested = threading.Event()
        self._previous_handlers: dict[int, object] = {}

    def __enter__(self) -> "PreemptionWatcher":
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum, frame) -> None:
        del signum, frame
        self._requested.set()

    def request_stop(self) -> None:
        """Asks for a stop as a signal would (for callers and tests)."""
        self._requested.set()

    def stop_requested(self) -> bool:
        """Whether this process, or any process of the run, was asked to stop."""
        local = self._requested.is_set()
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
        return bool(np.max(flags))
