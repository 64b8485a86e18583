"""Batches of a grain `MapDataset` made in worker processes (`mp_prefetch`) or in this thread.

The workers log errors only and keep what they free for reuse (fresh pages are slow to
fault in on virtual machines); grain's absl flags are marked parsed outside an absl app.
"""

from __future__ import annotations

import ctypes

import grain
from absl import flags
from absl import logging


def _allow_grain_flags_unparsed() -> None:
    """Lets grain's worker start read its absl flags' defaults outside an absl app.

    grain 0.2.18 reads `--grain_enable_multiprocess_worker_profiling` when it starts worker
    processes with JAX loaded, which raises absl's UnparsedFlagAccessError unless flags
    were parsed (grain#1355): library use (tests, notebooks) then takes every flag's
    default. Under an absl app (our entry points) the flags are parsed already.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it takes on 64 bits.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 * 2**20
_NEVER_TRIM = 2**31 - 1


def _keep_freed_memory() -> None:
    """Makes glibc's malloc in this process reuse what it frees: blocks of up to 32 MB come
    from the heap, which is not given back to the system (a no-op without glibc).

    A worker allocates the same large temporaries for every example (decoded and augmented
    images and masks). By default glibc maps the largest afresh each time and gives freed
    heap tops back, and first touching fresh pages costs about 1 ms per MB where page
    faults are slow (virtual machines): a fifth of a worker's time on 1024² COCO batches.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)


def _init_worker(worker_index: int, worker_count: int) -> None:
    """Keeps a worker's absl log to errors (opening its copy of the source repeats the
    warnings the main process logged when it opened the split) and its freed memory for
    reuse (`_keep_freed_memory`)."""
    del worker_index, worker_count
    logging.set_verbosity(logging.ERROR)
    _keep_freed_memory()


def batch_stream(dataset: grain.MapDataset, num_workers: int) -> grain.IterDataset:
    """The batches of `dataset` (a batched `grain.MapDataset`) in order, made by
    `num_workers` processes (0: in the calling thread), each one batch at a time."""
    if num_workers:
        # Workers stack their rows straight into shared memory; grain does not ask a batch
        # under `to_iter_dataset` to, and would copy each stacked batch into it.
        dataset.enable_shared_memory_output()
    # Each process makes one batch at a time: no reading threads, no read-ahead buffer
    # (grain's default, 16 threads and 500 elements, would hold 500 batches).
    stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if num_workers:
        _allow_grain_flags_unparsed()
        stream = stream.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers),
            worker_init_fn=_init_worker,
        )
    return stream
