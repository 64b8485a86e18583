"""An evaluation's host work (mapping detections back, pasting, encoding) in worker processes.

The work of one image is a function of small, picklable arguments; `OrderedWork` runs it in
the processes of a `process_pool` and hands the results back in the order the images were
given, so what is scored (and written) does not depend on the number of workers. At most
two images per worker are in flight: memory stays bounded whatever the split's size.
Processes, not threads: pycocotools' RLE encoder holds the GIL.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import multiprocessing
import multiprocessing.pool
import os
import signal
from typing import Any, Callable, Iterator, Optional

# Images in flight per worker: one being worked on, one waiting.
IN_FLIGHT_PER_WORKER = 2
# One BLAS thread per worker. The workers' matrix products are small (a 28 x 28 mask times
# a box's rows and columns) and gain nothing from more; OpenBLAS threads that spin while
# they wait take the cores from the other workers: on 2 cores, 2 workers ran 2.4x slower
# than the evaluation thread alone, and 0.53x its time with one BLAS thread each
# (benchmarks/eval_memory.py, AMD EPYC).
WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `values` set inside the block, as it was after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _ignore_stop_signals() -> None:
    """A worker leaves SIGINT and SIGTERM to the evaluating process. A scheduler's SIGTERM
    reaches every process of a job: the workers carry on with the pass, so the run can
    finish it and checkpoint (`jaxseg.preemption`) instead of waiting for the lost
    results of a killed worker. A worker ends when its pool is closed or its parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _close(pool: multiprocessing.pool.Pool) -> None:
    pool.close()
    pool.join()


def process_pool(workers: int) -> Optional[multiprocessing.pool.Pool]:
    """`workers` processes, started now with `WORKER_ENVIRONMENT` (None for 0: the work
    runs in the calling thread). They ignore SIGINT and SIGTERM; the pool is closed when
    the process exits, or before with `pool.close(); pool.join()`.

    Spawned, not forked: the evaluating process runs JAX's threads, which a fork copies in
    an undefined state.
    """
    if workers == 0:
        return None
    with _environment(WORKER_ENVIRONMENT):
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_stop_signals)
    atexit.register(_close, pool)
    return pool


class OrderedWork:
    """Runs `function(*args)` for each `submit` in `pool`, a `process_pool(workers)` (None:
    at once, in this thread), and returns the results in submission order, keeping at
    most `IN_FLIGHT_PER_WORKER * workers` in flight."""

    def __init__(
        self,
        function: Callable[..., Any],
        pool: Optional[multiprocessing.pool.Pool],
        workers: int,
    ):
        self._function = function
        self._pool = pool
        self._limit = IN_FLIGHT_PER_WORKER * workers
        self._pending: collections.deque = collections.deque()

    def submit(self, *args) -> list[Any]:
        """Starts `function(*args)`; returns the earliest results that had to finish to keep
        within the limit (in this thread: this one's result)."""
        if self._pool is None:
            return [self._function(*args)]
        self._pending.append(self._pool.apply_async(self._function, args))
        finished = []
        while len(self._pending) > self._limit:
            finished.append(self._pending.popleft().get())
        return finished

    def drain(self) -> list[Any]:
        """The results of everything still in flight, in submission order."""
        finished = [result.get() for result in self._pending]
        self._pending.clear()
        return finished
