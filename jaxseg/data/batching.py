"""Fixed-shape numpy batches of a `DecodedSource` on grain, each process its share of every batch.

`train_batches` gives the infinite stream of training batches, `eval_batches` one ordered
pass padded to whole batches. Both are grain `MapDataset` chains (random access by
position, so nothing depends on what was read before), over this process's row positions
j = 0, 1, ...: row j is row r = j mod b of local batch s = j div b, global row
p·b + r of global batch s (b = B / P rows per process, p its index):

  train: order = range(N) -> shuffle(seed) -> repeat   (grain's permutation, new each epoch)
         row j at global stream position g = s·B + p·b + r: example order[g], rescaled
         (multi-scale; fitted from the source pixels where the records keep them), flipped
         and augmented with draws from (seed, s, p·b + r), padded to
         M instance slots
         -> rows from start_step·b on -> batch(b)
  eval:  row j: example g = s·B + p·b + r, or a padding row past the end -> batch(b)

Batch s is therefore a pure function of (seed, s): a resumed run starts the chain at its
step and sees exactly the batches an uninterrupted one would, so no iterator state needs
saving. `num_workers` > 0 makes whole batches in that many worker processes (grain's
`mp_prefetch`: worker w makes batches w, w + k, ..., stacked straight into shared memory
and handed back in order), which changes nothing in them; 0 makes them in the calling
thread.

Images travel as uint8 pixels, a quarter of float32's bytes (moving a batch through shared
memory costs about 1 ms per MB where fresh pages are slow to fault in); the train and eval
steps scale them to float32 in [0, 1] on the device (`model_images`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.data import augment, grain_workers, pipeline, shapes

_AUGMENT_STREAM = 2
_MAX_SEED = 2**32
_ENDLESS = 2**62  # the training stream's row positions: past any run's length

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


_UNIT = np.float32(1.0 / 255.0)


def unit_range(pixels: np.ndarray) -> np.ndarray:
    """float32 [...] in [0, 1]: uint8 pixel values [...] as the model sees them (times
    float32(1 / 255)); the same bits as `model_images` gives on the device."""
    return np.multiply(pixels, _UNIT, dtype=np.float32)


def model_images(images: jax.Array) -> jax.Array:
    """float32 images [..., 3] in [0, 1] as the model takes them; traceable.

    uint8 pixels [..., 3] (the streams' `image`) become float32(pixels) times float32(1 /
    255), bit for bit `unit_range`; float images (hand-made batches) are taken as already
    in [0, 1] and returned as they are.
    """
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) * _UNIT
    return images


def _quantize(image: np.ndarray, out: np.ndarray) -> None:
    """Writes uint8 pixels [H, W, 3] of `image` into `out`: a uint8 image as it is, a float32
    one in [0, 255] (augmented) rounded to the nearest integer (ties to even) and clipped
    to [0, 255], as torchvision's ColorJitter returns uint8 images (it truncates instead,
    after each of its steps)."""
    if image.dtype == np.uint8:
        out[:] = image
        return
    rounded = np.rint(image)
    np.clip(rounded, 0, 255, out=rounded)
    np.copyto(out, rounded, casting="unsafe")


FIELDS = (
    "image",
    "semantic",
    "masks",
    "packed_masks",
    "boxes",
    "labels",
    "instance_valid",
    "valid",
    "index",
    "image_hw",
)


def _layouts(canvas_hw, max_instances: int) -> dict[str, tuple]:
    """(shape, dtype) of each array field's row: S x S canvas, M instance slots."""
    height, width = canvas_hw
    slots = max_instances
    return {
        "image": ((height, width, 3), np.uint8),
        "semantic": ((height, width), np.int32),
        "masks": ((slots, height, width), np.uint8),
        "packed_masks": ((slots, height, math.ceil(width / 8)), np.uint8),
        "boxes": ((slots, 4), np.float32),
        "labels": ((slots,), np.int32),
        "instance_valid": ((slots,), bool),
    }


def _row(example: dict | None, index: int, image_hw, max_instances: int, canvas_hw, fields) -> dict:
    """One batch row of `fields`: `example` (None: a padding row, all zeros) in M =
    `max_instances` slots, keeping the M largest instances if it has more (`truncated`,
    always there, says so)."""
    layouts = _layouts(canvas_hw, max_instances)
    row = {name: np.zeros(*layouts[name]) for name in fields if name in layouts}
    scalars = {
        "valid": np.bool_(example is not None),
        "index": np.int32(index if example is not None else -1),
        "image_hw": np.asarray(image_hw, np.int32),
    }
    row.update({name: value for name, value in scalars.items() if name in fields})
    row["truncated"] = np.bool_(False)
    if example is None:
        return row
    keep = slice(None)  # all of them, without copying the masks
    if len(example["labels"]) > max_instances:
        keep = _largest_instances(example["masks"], max_instances)
        row["truncated"] = np.bool_(True)
    count = min(len(example["labels"]), max_instances)
    if "image" in row:
        _quantize(example["image"], row["image"])
    if "semantic" in row:
        row["semantic"][:] = example["semantic"]
    if "masks" in row:
        row["masks"][:count] = example["masks"][keep]
    if "packed_masks" in row:
        for slot, mask in enumerate(example["masks"][keep]):
            row["packed_masks"][slot] = np.packbits(mask, axis=-1)
    for name in ("boxes", "labels"):
        if name in row:
            row[name][:count] = example[name][keep]
    if "instance_valid" in row:
        row["instance_valid"][:count] = True
    return row


def unpack_masks(packed: jax.Array, width: int) -> jax.Array:
    """uint8 masks [..., H, W] (0/1) of their `packed_masks` [..., H, ceil(W / 8)] (the bits
    of each row of W pixels, first pixel in the highest bit); traceable."""
    return jnp.unpackbits(packed, axis=-1, count=width)


def _check_fields(fields) -> tuple[str, ...]:
    fields = FIELDS if fields is None else tuple(fields)
    unknown = [name for name in fields if name not in FIELDS]
    if unknown:
        raise ValueError(f"unknown batch fields {unknown}; expected some of {FIELDS}")
    return fields


class _Rows:
    """Where this process's row positions j lie in the global batches (module docstring)."""

    def __init__(self, batch_size: int, local_size: int, process_index: int):
        self._batch_size = batch_size
        self._local_size = local_size
        self._process_index = process_index

    def locate(self, position: int) -> tuple[int, int, int]:
        """(step s, global row p·b + r, stream position s·B + p·b + r) of local row
        position j = `position`."""
        step, row = divmod(int(position), self._local_size)
        global_row = self._process_index * self._local_size + row
        return step, global_row, step * self._batch_size + global_row


class _TrainRow:
    """Local row position j -> its training batch row (see the module docstring)."""

    def __init__(self, source, order, rows: _Rows, seed, flip, augmentation, max_instances, fields):
        self._source = source
        self._fields = fields
        self._order = order
        self._rows = rows
        self._seed = seed
        self._flip = flip
        self._augmentation = augmentation
        self._max_instances = max_instances

    def __call__(self, position: int) -> dict:
        step, row, stream_position = self._rows.locate(position)
        index = int(self._order[stream_position])
        rng = np.random.default_rng([self._seed, _AUGMENT_STREAM, step, row])
        flip = self._flip and rng.random() < 0.5
        scales = self._augmentation is not None and self._augmentation.shorter_sides is not None
        decoded = isinstance(self._source, pipeline.DecodedSource)
        if scales and decoded and self._source.keeps_source:
            example = self._source.fitted(index, augment.drawn_fit(rng, self._augmentation))
        elif scales:
            # Only here: without the decoded cache, `placement` decodes the record again.
            placement = self._source.placement(index) if decoded else None
            example = augment.multi_scale(self._source[index], rng, self._augmentation, placement)
        else:
            example = self._source[index]
        if flip:
            example = _flip_horizontally(example)
        if self._augmentation is not None:
            example = augment.augment(example, rng, self._augmentation)
        canvas_hw = example["semantic"].shape
        return _row(example, index, canvas_hw, self._max_instances, canvas_hw, self._fields)


class _EvalRow:
    """Local row position j -> example g's batch row (a padding row past the end)."""

    def __init__(self, source, rows: _Rows, max_instances, canvas_hw, fields):
        self._source = source
        self._fields = fields
        self._rows = rows
        self._max_instances = max_instances
        self._canvas_hw = canvas_hw

    def __call__(self, position: int) -> dict:
        _, _, index = self._rows.locate(position)
        if index >= len(self._source):
            canvas_hw = self._canvas_hw
            return _row(None, index, canvas_hw, self._max_instances, canvas_hw, self._fields)
        image_hw = self._canvas_hw
        if isinstance(self._source, pipeline.DecodedSource):
            placed = self._source.placement(index)
            image_hw = (placed.valid_height, placed.valid_width)
        example = self._source[index]
        return _row(example, index, image_hw, self._max_instances, self._canvas_hw, self._fields)


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
    fields=None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite shuffled stream of this process's share of each global training batch.

    The stream visits the examples epoch by epoch, each epoch in the order of grain's
    permutation for (seed, epoch). Global batch s holds stream positions
    [s·batch_size, (s+1)·batch_size) (it may straddle two epochs); process p gets the
    contiguous slice [p·B, (p+1)·B) of it, B = batch_size / process_count. Row j of global
    batch s is rescaled to a drawn training shorter side where `augmentation` has them
    (`augment.multi_scale`), mirrored left-right with probability 1/2, then augmented as
    `augmentation` says (`jaxseg.data.augment`; None = not at all), all drawn from
    (seed, s, j). Batch s
    is thus a pure function of (seed, s), whatever `num_workers` (see the module
    docstring): starting at `start_step` = k yields exactly what an uninterrupted stream
    yields after k batches.

    Yields dicts of `fields` (None: all of `FIELDS`): image uint8 [B, S, S, 3] (the pixels,
    augmented ones rounded to the nearest integer; `model_images` gives the model's float32
    in [0, 1]), semantic int32 [B, S, S], masks uint8 [B, M, S, S], packed_masks uint8
    [B, M, S, ceil(S / 8)] (the masks' bits, 8x fewer bytes to move; `unpack_masks`),
    boxes float32 [B, M, 4], labels int32 [B, M] (0 = empty slot), instance_valid bool
    [B, M], valid bool [B] (all True), index int32 [B] (the example's position in
    `source`), image_hw int32 [B, 2] (the whole canvas (S, S): flips and scale jitter move
    the image on it), M = max_instances.
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
    order = grain.MapDataset.range(len(source)).shuffle(seed=int(seed)).repeat()
    rows = _Rows(batch_size, local_size, int(process_index))
    make_row = _TrainRow(
        source, order, rows, int(seed), flip, enabled, max_instances, _check_fields(fields)
    )
    first_row = int(start_step) * local_size
    dataset = (
        grain.MapDataset.range(first_row, _ENDLESS)
        .map(make_row)
        .batch(local_size, drop_remainder=True)
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
    fields=None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of each global batch of one ordered pass over `source`.

    Global batch b holds examples [b·batch_size, (b+1)·batch_size); process p gets the
    contiguous slice [p·B, (p+1)·B) of it, B = batch_size / process_count. There are
    ceil(len(source) / batch_size) batches on every process; rows past the end are
    padding: all zeros, `valid` False, `index` -1, `image_hw` the canvas. No flips. The
    same `fields` as `train_batches`; `image_hw` is each image's extent on the canvas
    where `source` is a `pipeline.DecodedSource` that knows it (`placement`), else the
    whole canvas.
    """
    local_size = _local_batch_size(batch_size, process_index, process_count)
    _check_stream_arguments(source, max_instances, num_workers)
    canvas_hw = source[0]["semantic"].shape
    rows = _Rows(batch_size, local_size, int(process_index))
    num_batches = math.ceil(len(source) / batch_size)
    dataset = (
        grain.MapDataset.range(num_batches * local_size)
        .map(_EvalRow(source, rows, max_instances, canvas_hw, _check_fields(fields)))
        .batch(local_size)
    )
    return _iterate(dataset, int(num_workers), max_instances)


def _iterate(dataset, num_workers: int, max_instances: int) -> Iterator[dict]:
    """The batches of `dataset` (a batched `grain.MapDataset`), made by `num_workers`
    processes (0: in this thread); warns once if a row dropped instances; the workers stop
    when the iterator is closed."""
    iterator = iter(grain_workers.batch_stream(dataset, num_workers))
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
