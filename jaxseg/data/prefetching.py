"""The items of an iterable produced ahead in a background thread (`prefetch`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

from jaxseg.data import shapes


def prefetch(iterable: Iterable, size: int = 2) -> Iterator:
    """The items of `iterable`, in order, produced up to `size` ahead in a background thread.

    The thread starts at the first `next`. It stops, after finishing the item in progress,
    once the returned iterator is closed or garbage-collected, or once the main thread has
    finished: it is not a daemon, because the interpreter's exit kills daemon threads even
    inside numpy's C++ code, which aborts the process. An exception of the producer is
    raised by the `next` that would have returned the item.
    """
    if not shapes.is_integer(size) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return _prefetched(iter(iterable), int(size))


def _wanted(stop: threading.Event) -> bool:
    """Whether a consumer may still take items: not closed, and the program not ending."""
    return not stop.is_set() and threading.main_thread().is_alive()


def _put(items: queue.Queue, entry, stop: threading.Event) -> bool:
    """Puts `entry` into `items` while it is `_wanted`; whether it did."""
    while _wanted(stop):
        try:
            items.put(entry, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def _prefetched(iterator: Iterator, size: int) -> Iterator:
    items: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce() -> None:
        # Entries: (True, item), then (False, None) at the end or (False, error).
        try:
            for item in iterator:
                if not _put(items, (True, item), stop):
                    return
        except BaseException as error:  # noqa: BLE001 (re-raised by the consumer)
            _put(items, (False, error), stop)
            return
        _put(items, (False, None), stop)

    threading.Thread(target=produce, name="prefetch").start()
    try:
        while True:
            is_item, value = items.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
