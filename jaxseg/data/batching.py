"""Fixed-shape numpy batches of a `DecodedSource` on grain, each process its share of every batch.

`train_batches` gives the infinite stream of training batches, `eval_batches` one ordered
pass padded to whole batches. Both are grain `MapDataset` chains (random access by
position, so nothing depends on what was read before):

  train: range(N) -> shuffle(seed) -> repeat  (a new permutation each epoch, grain's own)
         -> example at stream position g: read, flipped and augmented with draws from
            (seed, step, row) = (seed, g // B, g % B), padded to M instance slots
         -> batch(B / P) -> [p::P] (process p's contiguous rows of every global batch)
         -> [start_step:]
  eval:  range(ceil(N / B) * B) -> example or padding row -> batch(B / P) -> [p::P]

Batch s is therefore a pure function of (seed, s): a resumed run starts the chain at its
step and sees exactly the batches an uninterrupted one would, so no iterator state needs
saving. `num_workers` > 0 decodes and augments whole batches in that many worker processes
(grain's `mp_prefetch`: worker w makes batches w, w + k, ..., handed back in order through
shared memory), which changes nothing in the batches; 0 makes them in the calling thread.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags
from absl import logging

from jaxseg.data import augment, pipeline, shapes

_AUGMENT_STREAM = 2
_MAX_SEED = 2**32

def _local_batch_size(batch_size: int, process_index: int, process_count: int) -> int:
    """This process's share of a global batch; ValueError for inconsistent arguments."""
    if not shapes.is_integer(process_count) or process_count < 1:
        raise ValueError(f"process_count must be a positive int, got {process_count!r}")
    if not shapes.is_integer(process_index) or not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
    if not shapes.is_integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} (global) is not divisible by process_count {process_count}"
        )
    return batch_size // process_count


def _check_stream_arguments(source, max_instances: int, num_workers: int) -> None:
    if len(source) == 0:
        raise ValueError("source is empty")
    if not shapes.is_integer(max_instances) or max_instances < 1:
        raise ValueError(f"max_instances must be a positive int, got {max_instances!r}")
    if not shapes.is_integer(num_workers) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")


def _largest_instances(masks: np.ndarray, max_instances: int) -> np.ndarray:
    """Indices (in their original order) of the `max_instances` largest of masks [n, H, W]."""
    areas = masks.reshape(len(masks), -1).sum(axis=1, dtype=np.int64)
    largest = np.argsort(-areas, kind="stable")[:max_instances]
    return np.sort(largest)


def _flip_horizontally(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mirrors image, semantic, masks and boxes of a decoded example left-right."""
    width = example["image"].shape[1]
    boxes = example["boxes"].copy()
    boxes[:, 0] = width - example["boxes"][:, 2]
    boxes[:, 2] = width - example["boxes"][:, 0]
    return {
        "image": example["image"][:, ::-1],
        "semantic": example["semantic"][:, ::-1],
        "masks": example["masks"][:, :, ::-1],
        "boxes": boxes,
        "labels": example["labels"],
    }


def unit_range(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 [...] in [0, 1]: pixel values [...] in [0, 255] (uint8 or float32) as the
    model sees them (times float32(1 / 255)); written into `out` if given."""
    return np.multiply(pixels, np.float32(1.0 / 255.0), out=out, dtype=np.float32)


def _row(example: dict | None, index: int, image_hw, max_instances: int, canvas_hw) -> dict:
    """One batch row: `example` (None: a padding row, all zeros) in M = `max_instances`
    slots, keeping the M largest instances if it has more (`truncated` says so)."""
    height, width = canvas_hw
    row = {
        "image": np.zeros((height, width, 3), np.float32),
        "semantic": np.zeros((height, width), np.int32),
        "masks": np.zeros((max_instances, height, width), np.uint8),
        "boxes": np.zeros((max_instances, 4), np.float32),
        "labels": np.zeros(max_instances, np.int32),
        "instance_valid": np.zeros(max_instances, bool),
        "valid": np.bool_(example is not None),
        "index": np.int32(index if example is not None else -1),
        "image_hw": np.asarray(image_hw, np.int32),
        "truncated": np.bool_(False),
    }
    if example is None:
        return row
    keep = np.arange(len(example["labels"]))
    if len(keep) > max_instances:
        keep = _largest_instances(example["masks"], max_instances)
        row["truncated"] = np.bool_(True)
    count = len(keep)
    unit_range(example["image"], out=row["image"])
    row["semantic"][:] = example["semantic"]
    row["masks"][:count] = example["masks"][keep]
    row["boxes"][:count] = example["boxes"][keep]
    row["labels"][:count] = example["labels"][keep]
    row["instance_valid"][:count] = True
    return row


class _TrainRow:
    """Stream position g holding source example `index` -> its training batch row."""

    def __init__(self, source, batch_size, seed, flip, augmentation, max_instances):
        self._source = source
        self._batch_size = batch_size
        self._seed = seed
        self._flip = flip
        self._augmentation = augmentation
        self._max_instances = max_instances

    def __call__(self, position: int, index: int) -> dict:
        step, row = divmod(int(position), self._batch_size)
        rng = np.random.default_rng([self._seed, _AUGMENT_STREAM, step, row])
        example = self._source[int(index)]
        if self._flip and rng.random() < 0.5:
            example = _flip_horizontally(example)
        if self._augmentation is not None:
            example = augment.augment(example, rng, self._augmentation)
        canvas_hw = example["semantic"].shape
        return _row(example, int(index), canvas_hw, self._max_instances, canvas_hw)


class _EvalRow:
    """Position i of the padded pass -> example i's batch row (a padding row past the end)."""

    def __init__(self, source, max_instances, canvas_hw):
        self._source = source
        self._max_instances = max_instances
        self._canvas_hw = canvas_hw

    def __call__(self, index: int) -> dict:
        index = int(index)
        if index >= len(self._source):
            return _row(None, index, (0, 0), self._max_instances, self._canvas_hw)
        image_hw = self._canvas_hw
        if isinstance(self._source, pipeline.DecodedSource):
            placed = self._source.placement(index)
            image_hw = (placed.valid_height, placed.valid_width)
        example = self._source[index]
        return _row(example, index, image_hw, self._max_instances, self._canvas_hw)


def train_batches(
    source,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    *,
    flip: bool = True,
    augmentation: augment.Augmentation | None = None,
    max_instances: int,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite shuffled stream of this process's share of each global training batch.

    The stream visits the examples epoch by epoch, each epoch in the order of grain's
    permutation for (seed, epoch). Global batch s holds stream positions
    [s·batch_size, (s+1)·batch_size) (it may straddle two epochs); process p gets the
    contiguous slice [p·B, (p+1)·B) of it, B = batch_size / process_count. Row j of global
    batch s is mirrored left-right with probability 1/2, then augmented as `augmentation`
    says (`jaxseg.data.augment`; None = not at all), all drawn from (seed, s, j). Batch s
    is thus a pure function of (seed, s), whatever `num_workers` (see the module
    docstring): starting at `start_step` = k yields exactly what an uninterrupted stream
    yields after k batches.

    Yields dicts: image float32 [B, S, S, 3] in [0, 1], semantic int32 [B, S, S],
    masks uint8 [B, M, S, S], boxes float32 [B, M, 4], labels int32 [B, M] (0 = empty
    slot), instance_valid bool [B, M], valid bool [B] (all True), index int32 [B] (the
    example's position in `source`), image_hw int32 [B, 2] (the whole canvas (S, S):
    flips and scale jitter move the image on it), M = max_instances.
    Examples with more than M instances keep the M largest (warned once).
    """
    local_size = _local_batch_size(batch_size, process_index, process_count)
    _check_stream_arguments(source, max_instances, num_workers)
    if not shapes.is_integer(seed) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    if not shapes.is_integer(start_step) or start_step < 0:
        raise ValueError(f"start_step must be a non-negative int, got {start_step!r}")
    if augmentation is not None and not isinstance(augmentation, augment.Augmentation):
        raise ValueError(f"augmentation must be None or an Augmentation, got {augmentation!r}")
    enabled = augmentation if augmentation is not None and augmentation.enabled else None
    make_row = _TrainRow(source, batch_size, int(seed), flip, enabled, max_instances)
    dataset = (
        grain.MapDataset.range(len(source))
        .shuffle(seed=int(seed))
        .repeat()
        .map_with_index(make_row)
        .batch(local_size, drop_remainder=True)[process_index::process_count][start_step:]
    )
    return _iterate(dataset, int(num_workers), max_instances)


def eval_batches(
    source,
    batch_size: int,
    *,
    max_instances: int,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of each global batch of one ordered pass over `source`.

    Global batch b holds examples [b·batch_size, (b+1)·batch_size); process p gets the
    contiguous slice [p·B, (p+1)·B) of it, B = batch_size / process_count. There are
    ceil(len(source) / batch_size) batches on every process; rows past the end are
    padding: all zeros, `valid` False, `index` -1. No flips. Same fields as
    `train_batches`; `image_hw` is each image's extent on the canvas where `source` is a
    `pipeline.DecodedSource` that knows it (`placement`), else the whole canvas.
    """
    local_size = _local_batch_size(batch_size, process_index, process_count)
    _check_stream_arguments(source, max_instances, num_workers)
    canvas_hw = source[0]["semantic"].shape
    padded = math.ceil(len(source) / batch_size) * batch_size
    dataset = (
        grain.MapDataset.range(padded)
        .map(_EvalRow(source, max_instances, canvas_hw))
        .batch(local_size)[process_index::process_count]
    )
    return _iterate(dataset, int(num_workers), max_instances)


def _allow_grain_flags_unparsed() -> None:
    """Lets grain's worker start read its absl flags' defaults outside an absl app.

    grain 0.2.18 reads `--grain_enable_multiprocess_worker_profiling` when it starts worker
    processes with JAX loaded, which raises absl's UnparsedFlagAccessError unless flags
    were parsed (grain#1355): library use (tests, notebooks) then takes every flag's
    default. Under an absl app (our entry points) the flags are parsed already.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _quiet_worker(worker_index: int, worker_count: int) -> None:
    """Keeps a worker's absl log to errors: opening its copy of the source repeats the
    warnings the main process logged when it opened the split."""
    del worker_index, worker_count
    logging.set_verbosity(logging.ERROR)


def _iterate(dataset: grain.MapDataset, num_workers: int, max_instances: int) -> Iterator[dict]:
    """The batches of `dataset`, made by `num_workers` processes (0: in this thread); warns
    once if a row dropped instances; the workers stop when the iterator is closed."""
    stream = dataset.to_iter_dataset()
    if num_workers:
        _allow_grain_flags_unparsed()
        stream = stream.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers),
            worker_init_fn=_quiet_worker,
        )
    iterator = iter(stream)
    warned = False
    try:
        for batch in iterator:
            if batch.pop("truncated").any() and not warned:
                warnings.warn(
                    f"an example has more than max_instances={max_instances} instances; "
                    "keeping the largest (this warning is shown once per stream)",
                    stacklevel=2,
                )
                warned = True
            yield batch
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
