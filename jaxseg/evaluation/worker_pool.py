"""An evaluation's host work (mapping detections back, pasting, encoding) in worker processes.

The work of one image is a function of small, picklable arguments; `OrderedWork` runs it in
`workers` spawned processes and hands the results back in the order the images were given,
so what is scored (and written) does not depend on the number of workers. At most two
images per worker are in flight: memory stays bounded whatever the split's size.
Processes, not threads: pycocotools' RLE encoder holds the GIL.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
from typing import Any, Callable, Optional

# Images in flight per worker: one being worked on, one waiting.
IN_FLIGHT_PER_WORKER = 2


def process_pool(workers: int) -> Optional[concurrent.futures.Executor]:
    """`workers` spawned processes (None for 0: the work runs in the calling thread).

    Spawned, not forked: the evaluating process runs JAX's threads, which a fork copies
    in an undefined state.
    """
    if workers == 0:
        return None
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


class OrderedWork:
    """Runs `function(*args)` for each `submit` in `pool`, a `process_pool(workers)` (None:
    at once, in this thread), and returns the results in submission order, keeping at
    most `IN_FLIGHT_PER_WORKER * workers` in flight."""

    def __init__(
        self,
        function: Callable[..., Any],
        pool: Optional[concurrent.futures.Executor],
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
        self._pending.append(self._pool.submit(self._function, *args))
        finished = []
        while len(self._pending) > self._limit:
            finished.append(self._pending.popleft().result())
        return finished

    def drain(self) -> list[Any]:
        """The results of everything still in flight, in submission order."""
        finished = [future.result() for future in self._pending]
        self._pending.clear()
        return finished
