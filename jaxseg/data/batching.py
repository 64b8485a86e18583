"""Fixed-shape numpy batches of a `DecodedSource`, each process its share of every batch.

`train_batches` gives the infinite stream of training batches (epoch permutations, flips
and augmentation drawn from `(seed, step, row)`, so batch `s` is a pure function of the
seed and `s` and a resumed run sees exactly the batches the uninterrupted one would);
`eval_batches` one ordered pass, padded to whole batches.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from jaxseg.data import augment, pipeline, shapes

_PERMUTATION_STREAM = 0
_FLIP_STREAM = 1
_AUGMENT_STREAM = 2


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


def _check_source_and_instances(source, max_instances: int) -> None:
    if len(source) == 0:
        raise ValueError("source is empty")
    if not shapes.is_integer(max_instances) or max_instances < 1:
        raise ValueError(f"max_instances must be a positive int, got {max_instances!r}")


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


def _assemble_batch(source, indices, flips, valid, max_instances, transform=None):
    """One fixed-shape batch; also whether an example had to drop instances.

    Args:
      source: random access to decoded examples.
      indices: int [B] example indices (ignored where `valid` is False).
      flips: bool [B] which examples to mirror.
      valid: bool [B] False for padding rows, which stay all zeros.
      max_instances: M, instance slots per example.
      transform: None, or `(row, example) -> example` applied after the flip (augmentation).
    """
    first = source[int(indices[np.argmax(valid)])] if valid.any() else source[0]
    height, width = first["semantic"].shape
    size = len(indices)
    images = np.zeros((size, height, width, 3), np.float32)
    batch = {
        "semantic": np.zeros((size, height, width), np.int32),
        "masks": np.zeros((size, max_instances, height, width), np.uint8),
        "boxes": np.zeros((size, max_instances, 4), np.float32),
        "labels": np.zeros((size, max_instances), np.int32),
        "instance_valid": np.zeros((size, max_instances), bool),
        "valid": np.asarray(valid, bool).copy(),
        "index": np.where(valid, indices, -1).astype(np.int32),
        "image_hw": np.tile(np.array([height, width], np.int32), (size, 1)),
    }
    truncated = False
    for row in np.flatnonzero(valid):
        example = source[int(indices[row])]
        if flips[row]:
            example = _flip_horizontally(example)
        if transform is not None:
            example = transform(row, example)
        keep = np.arange(len(example["labels"]))
        if len(keep) > max_instances:
            keep = _largest_instances(example["masks"], max_instances)
            truncated = True
        count = len(keep)
        images[row] = example["image"]
        batch["semantic"][row] = example["semantic"]
        batch["masks"][row, :count] = example["masks"][keep]
        batch["boxes"][row, :count] = example["boxes"][keep]
        batch["labels"][row, :count] = example["labels"][keep]
        batch["instance_valid"][row, :count] = True
    batch["image"] = unit_range(images, out=images)
    return batch, truncated


def _warn_truncated(max_instances: int) -> None:
    warnings.warn(
        f"an example has more than max_instances={max_instances} instances; keeping the "
        "largest (this warning is shown once per stream)",
        stacklevel=3,
    )


class _EpochPermutations:
    """The permutation of `num_examples` for each epoch, drawn from (seed, epoch)."""

    def __init__(self, seed: int, num_examples: int):
        self._seed = seed
        self._num_examples = num_examples
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            rng = np.random.default_rng([self._seed, _PERMUTATION_STREAM, epoch])
            self._cache[epoch] = rng.permutation(self._num_examples)
        return self._cache[epoch]


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
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite shuffled stream of this process's share of each global training batch.

    The stream visits the examples epoch by epoch, each epoch in the order of a permutation
    drawn from (seed, epoch). Global batch s holds stream positions
    [s·batch_size, (s+1)·batch_size) (it may straddle two epochs); process p gets the
    contiguous slice [p·B, (p+1)·B) of it, B = batch_size / process_count. Example j of
    global batch s is mirrored left-right with probability 1/2, drawn from (seed, s, j),
    then augmented as `augmentation` says (`jaxseg.data.augment`; None = not at all) with
    draws from (seed, s, j). Batch s is thus a pure function of (seed, s): starting at
    `start_step` = k yields exactly what an uninterrupted stream yields after k batches.

    Yields dicts: image float32 [B, S, S, 3] in [0, 1], semantic int32 [B, S, S],
    masks uint8 [B, M, S, S], boxes float32 [B, M, 4], labels int32 [B, M] (0 = empty
    slot), instance_valid bool [B, M], valid bool [B] (all True), index int32 [B] (the
    example's position in `source`), image_hw int32 [B, 2] (the whole canvas (S, S):
    flips and scale jitter move the image on it), M = max_instances.
    Examples with more than M instances keep the M largest (warned once).
    """
    local_size = _local_batch_size(batch_size, process_index, process_count)
    _check_source_and_instances(source, max_instances)
    if not shapes.is_integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not shapes.is_integer(start_step) or start_step < 0:
        raise ValueError(f"start_step must be a non-negative int, got {start_step!r}")
    if augmentation is not None and not isinstance(augmentation, augment.Augmentation):
        raise ValueError(f"augmentation must be None or an Augmentation, got {augmentation!r}")
    return _train_stream(
        source,
        batch_size,
        local_size,
        int(seed),
        int(start_step),
        flip,
        augmentation if augmentation is not None and augmentation.enabled else None,
        max_instances,
        int(process_index),
    )


def _augmenter(augmentation, seed: int, step: int, rows: np.ndarray) -> Callable | None:
    """The `transform` of `_assemble_batch` for batch `step`: local row r is global row
    rows[r], augmented with draws from (seed, step, rows[r])."""
    if augmentation is None:
        return None

    def transform(row: int, example: dict) -> dict:
        rng = np.random.default_rng([seed, _AUGMENT_STREAM, step, int(rows[row])])
        return augment.augment(example, rng, augmentation)

    return transform


def _train_stream(
    source, batch_size, local_size, seed, step, flip, augmentation, max_instances, process
):
    num_examples = len(source)
    permutation = _EpochPermutations(seed, num_examples)
    local_slice = slice(process * local_size, (process + 1) * local_size)
    global_rows = np.arange(batch_size, dtype=np.int64)[local_slice]
    all_valid = np.ones(local_size, bool)
    warned = False
    while True:
        positions = step * batch_size + global_rows
        epochs = positions // num_examples
        indices = np.empty(local_size, np.int64)
        for epoch in np.unique(epochs):
            in_epoch = epochs == epoch
            indices[in_epoch] = permutation(int(epoch))[positions[in_epoch] % num_examples]
        if flip:
            flip_rng = np.random.default_rng([seed, _FLIP_STREAM, step])
            flips = (flip_rng.random(batch_size) < 0.5)[local_slice]
        else:
            flips = np.zeros(local_size, bool)
        transform = _augmenter(augmentation, seed, step, global_rows)
        batch, truncated = _assemble_batch(
            source, indices, flips, all_valid, max_instances, transform
        )
        if truncated and not warned:
            _warn_truncated(max_instances)
            warned = True
        yield batch
        step += 1


def eval_batches(
    source,
    batch_size: int,
    *,
    max_instances: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of each global batch of one ordered pass over `source`.

    Global batch b holds examples [b·batch_size, (b+1)·batch_size); process p gets the
    contiguous slice [p·B, (p+1)·B) of it, B = batch_size / process_count. There are
    ceil(len(source) / batch_size) batches on every process; rows past the end are
    padding: all zeros, `valid` False, `index` -1. No flips. Same fields as
    `train_batches`; `image_hw` is each image's extent on the canvas where `source` is a
    `pipeline.DecodedSource` that knows it (`placement`).
    """
    local_size = _local_batch_size(batch_size, process_index, process_count)
    _check_source_and_instances(source, max_instances)
    return _eval_stream(source, batch_size, local_size, max_instances, int(process_index))


def _eval_stream(source, batch_size, local_size, max_instances, process):
    num_examples = len(source)
    no_flips = np.zeros(local_size, bool)
    warned = False
    for step in range(math.ceil(num_examples / batch_size)):
        start = step * batch_size + process * local_size
        indices = np.arange(start, start + local_size, dtype=np.int64)
        valid = indices < num_examples
        batch, truncated = _assemble_batch(source, indices, no_flips, valid, max_instances)
        if isinstance(source, pipeline.DecodedSource):
            for row in np.flatnonzero(valid):
                placed = source.placement(int(indices[row]))
                batch["image_hw"][row] = (placed.valid_height, placed.valid_width)
        if truncated and not warned:
            _warn_truncated(max_instances)
            warned = True
        yield batch
