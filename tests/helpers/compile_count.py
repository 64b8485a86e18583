"""Counting the XLA compilations a piece of code starts."""

import contextlib
from typing import Iterator

import jax

# What jax reports for every XLA compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[float]]:
    """Yields a list that gets the seconds of each XLA compilation inside the block (from
    any thread), a program read from the persistent cache included."""
    compiles: list[float] = []

    def count(event, seconds, **_):
        if event == BACKEND_COMPILE_EVENT:
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
