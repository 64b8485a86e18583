"""The records of a COCO-format folder keep its source: each image file's bytes as they are
and its annotations in the image's own pixels; examples are fitted to a canvas when read.

A record (one image; n usable annotations, in the JSON's order, crowds included):
  image_file     bytes         the image file's bytes (a JPEG stays a JPEG).
  mask_rles      bytes [n]     each annotation's mask at the image's own size as COCO
                               compressed-RLE counts (polygons rasterized and merged by
                               pycocotools, RLEs as the JSON gives them, compressed).
  labels         int32 [n]     class ids 1..K-1 (the categories by increasing id).
  crowd          bool [n]      the annotation's `iscrowd`.
  image_id       int64         the image's id in the JSON.
  file_name      text          its path relative to the images folder.
  height, width  int64         its size in pixels.

`read_source` makes one record from the JSON's entries, reading and fully decoding the file
(truncated or corrupt files are found here, not in training) and checking every
segmentation; the preparation runs it in worker threads (`read_sources`).
`fitted_example` decodes a record onto an S x S canvas at any `geometry.Fit`, exactly as
the folder datasets fit stored examples (bilinear image, nearest-neighbour masks), so
multi-scale training resamples the source pixels once: semantic map painted with every
mask in order (crowds too; the ignore label in the padding), instances the non-crowd
masks that keep a pixel at that fit, boxes their tight boxes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os

import numpy as np
from pycocotools import mask as mask_utils

from jaxseg.data import geometry
from jaxseg.data.coco_segmentation import Unusable, segmentation_rle
from jaxseg.data.images import ImageReadError, read_rgb

_AHEAD_PER_WORKER = 4
UNREADABLE = "unreadable images"
OTHER_SIZE = "images whose size differs from the JSON's height and width"

def _no_pixel_reason(canvas: int) -> str:
    return f"annotations whose mask has no pixel at image_size {canvas}"


def _has_pixel_at(rle: dict, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> bool:
    """Whether the mask `rle` of an image of `source_hw` keeps a pixel resized to
    `target_hw` by nearest neighbour (`geometry.resize_nearest`)."""
    if mask_utils.area(rle) == 0:
        return False
    if target_hw[0] >= source_hw[0] and target_hw[1] >= source_hw[1]:
        return True  # enlarging samples every source pixel
    rows = (2 * np.arange(target_hw[0]) + 1) * source_hw[0] // (2 * target_hw[0])
    columns = (2 * np.arange(target_hw[1]) + 1) * source_hw[1] // (2 * target_hw[1])
    return bool(mask_utils.decode(rle)[np.ix_(rows, columns)].any())


def read_source(job: tuple) -> tuple[dict | None, list[tuple[str, str]]]:
    """(record or None, skips) of one image.

    Args:
      job: (entry, annotations, images, fit, labels): the image's JSON dict (id, file_name,
        optional height and width), its annotations (known category) in file order, the
        images folder, the test-time `geometry.Fit` (for the no-pixel check) and category
        id -> label 1..K-1.

    Returns:
      The record (module docstring), None if the image cannot be used; and (reason, item)
      of every skipped image or annotation.
    """
    entry, annotations, images, fit, labels = job
    path = os.path.join(images, entry["file_name"])
    try:
        with open(path, "rb") as file:
            data = file.read()
        pixels = read_rgb(path, data)
    except OSError as error:
        return None, [(UNREADABLE, f"{path}: {error.strerror or error}")]
    except ImageReadError as error:
        return None, [(UNREADABLE, str(error))]
    height, width = pixels.shape[:2]
    listed = (entry.get("height"), entry.get("width"))
    if listed != (None, None) and listed != (height, width):
        return None, [(OTHER_SIZE, path)]
    target = geometry.resized_shape(height, width, fit)
    skips, rles, kept_labels, crowd = [], [], [], []
    for annotation in annotations:
        name = f"annotation {annotation.get('id')} of {entry['file_name']}"
        try:
            rle = segmentation_rle(annotation.get("segmentation"), height, width)
        except Unusable as skip:
            skips.append((str(skip), name))
            continue
        if not _has_pixel_at(rle, (height, width), target):
            skips.append((_no_pixel_reason(fit.canvas), name))
            continue
        rles.append(rle["counts"])
        kept_labels.append(labels[annotation["category_id"]])
        crowd.append(bool(annotation.get("iscrowd", 0)))
    record = {
        "image_file": data,
        "mask_rles": np.array(rles, dtype=np.object_),
        "labels": np.asarray(kept_labels, np.int32).reshape(len(rles)),
        "crowd": np.asarray(crowd, np.bool_).reshape(len(rles)),
        "image_id": int(entry["id"]),
        "file_name": entry["file_name"],
        "height": height,
        "width": width,
    }
    return record, skips


def read_sources(jobs: list, workers: int):
    """`read_source` of every job, in order, in `workers` threads (0: in the calling thread).

    Threads, not processes: reading files and decoding images release the GIL, and a process
    costs seconds to start (it imports the caller's main module) and a copy of every image's
    bytes back: on 2 cores (Xeon, AVX-512), 400 COCO-like JPEGs took 3.5 ms each with 2
    threads and 4.1 ms in the calling thread, 1,000 took 10 ms each with 2 processes.
    """
    if workers < 1:
        yield from map(read_source, jobs)
        return
    # At most a few images per thread ahead of the caller: the bytes of a whole dataset
    # read ahead would not fit in memory.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.submit(read_source, job))
            if len(pending) >= _AHEAD_PER_WORKER * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_placement(record, fit: geometry.Fit) -> geometry.Placement:
    """Where the record's image lies on the canvas of `fit`."""
    return geometry.placement((int(record["height"]), int(record["width"])), fit)


_PLANE_BITS = 64  # masks per bit plane
_PLANE_TYPES = (np.uint8, np.uint16, np.uint32, np.uint64)


def _bit_planes(masks: np.ndarray) -> list[np.ndarray]:
    """Bit planes [h, w] of uint8 masks [h, w, n] (0/1; column-major, as pycocotools decodes
    them): bit j of plane p is mask 64p + j; each plane the smallest unsigned type that holds
    its bits, column-major too."""
    planes = []
    for first in range(0, masks.shape[2], _PLANE_BITS):
        bits = min(_PLANE_BITS, masks.shape[2] - first)
        dtype = next(kind for kind in _PLANE_TYPES if np.dtype(kind).itemsize * 8 >= bits)
        plane = np.zeros(masks.shape[:2], dtype, order="F")
        for bit in range(bits):
            plane |= masks[:, :, first + bit].astype(dtype) << dtype(bit)
        planes.append(plane)
    return planes


def _bits(plane_values: list[np.ndarray], count: int) -> np.ndarray:
    """bool [count, L]: bit k of the values [L] of each plane (reductions of `_bit_planes`)."""
    stacked = []
    for values in plane_values:
        bits = np.arange(values.dtype.itemsize * 8, dtype=values.dtype)[:, None]
        stacked.append((values[None] >> bits) & values.dtype.type(1))
    return np.concatenate(stacked)[:count].astype(bool)


def _first_last(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and last index + 1 of the True values of each row of bool [n, L]."""
    return lines.argmax(axis=1), lines.shape[1] - lines[:, ::-1].argmax(axis=1)


def fitted_example(record, fit: geometry.Fit, ignore_label: int) -> dict[str, np.ndarray]:
    """The record's example on the canvas of `fit` (module docstring).

    Returns:
      image uint8 [S, S, 3], semantic int32 [S, S], masks uint8 [m, S, S] (0/1), boxes
      float32 [m, 4] (x1, y1, x2, y2, exclusive ends), labels int32 [m]: the m non-crowd
      annotations that keep a pixel at this fit.
    """
    size = fit.canvas
    pixels = read_rgb(_text(record["file_name"]), record["image_file"])
    canvas, placed = geometry.fit_image(pixels, fit)
    height, width = placed.height, placed.width
    valid_hw = (placed.valid_height, placed.valid_width)
    rows = (2 * np.arange(valid_hw[0]) + 1) * height // (2 * valid_hw[0])
    columns = (2 * np.arange(valid_hw[1]) + 1) * width // (2 * valid_hw[1])

    def resized(array: np.ndarray) -> np.ndarray:  # geometry.resize_nearest
        return np.take(np.take(array, rows, axis=0), columns, axis=1)

    labels = np.asarray(record["labels"], np.int32).reshape(-1)
    count = len(labels)
    semantic = np.full((size, size), ignore_label, np.int32)
    if count == 0:
        semantic[: valid_hw[0], : valid_hw[1]] = 0
        masks, boxes = np.zeros((0, size, size), np.uint8), np.zeros((0, 4), np.float32)
        return {"image": canvas, "semantic": semantic, "masks": masks, "boxes": boxes,
                "labels": labels}
    rles = [{"size": [height, width], "counts": c} for c in record["mask_rles"]]
    source_masks = mask_utils.decode(rles)  # [h, w, n]
    painted = np.zeros((height, width), np.uint8, order="F")  # labels are below 255
    for k in range(count):  # nearest sampling commutes with painting
        np.copyto(painted, np.uint8(labels[k]), where=source_masks[:, :, k].view(np.bool_))
    semantic[: valid_hw[0], : valid_hw[1]] = resized(painted)
    planes = [resized(plane) for plane in _bit_planes(source_masks)]
    row_bits = _bits([np.bitwise_or.reduce(plane, axis=1) for plane in planes], count)
    column_bits = _bits([np.bitwise_or.reduce(plane, axis=0) for plane in planes], count)
    instances = row_bits.any(axis=1) & ~np.asarray(record["crowd"], np.bool_).reshape(-1)
    kept = np.flatnonzero(instances)
    masks = np.zeros((len(kept), size, size), np.uint8)
    for slot, k in enumerate(kept):
        plane = planes[k // _PLANE_BITS]
        bit = plane.dtype.type(1) << plane.dtype.type(k % _PLANE_BITS)
        np.not_equal(plane & bit, 0, out=masks[slot, : valid_hw[0], : valid_hw[1]].view(np.bool_))
    (y1, y2), (x1, x2) = _first_last(row_bits[kept]), _first_last(column_bits[kept])
    return {
        "image": canvas,
        "semantic": semantic,
        "masks": masks,
        "boxes": np.stack([x1, y1, x2, y2], axis=1).astype(np.float32),
        "labels": labels[kept],
    }
