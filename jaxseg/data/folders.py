"""What the folder datasets (`coco_folder`, `semantic_folder`, `coco_panoptic_folder`) share.

Geometry (`jaxseg.data.geometry`): every example is stored on one static S x S canvas, the
image resized with its aspect ratio kept as the dataset's `Fit` says (default: the longer
side S; or detectron2's shortest-edge resize) and padded at the bottom and right with zeros.
Label maps and instance masks go through the same geometry by nearest neighbour; the
semantic map's padding holds the ignore label, so padding pixels never count in losses or
metrics. `geometry.placement` maps predictions on the canvas back to the image's own pixels.

Cache key: each config name hashes the stamp (relative path, size, modification time) of
every file the dataset reads (`file_stamp`), so adding, deleting or rewriting an image,
label map or JSON builds a new dataset instead of reusing a stale one.

Splits: a folder holds one set of images; `validation_mask` puts a fixed fraction of them in
the validation split, chosen by the SHA-256 of each image's file name (no seed, independent
of the order in which the files are listed).

Stored features of `semantic_folder` and `coco_panoptic_folder` (TFDS `array_record` format,
read without TensorFlow through `builder.as_data_source()`; `coco_folder`'s records keep the
source files instead, `jaxseg.data.coco_records`):
  image      uint8 [S, S, 3]  PNG.
  semantic   uint8 [S, S, 1]  PNG; class ids, the ignore label in the padding.
  mask_rles  bytes [n]        COCO compressed-RLE counts of each instance's S x S mask
                              (`pycocotools.mask.decode({"size": [S, S], "counts": c})`).
  boxes      float32 [n, 4]   (x1, y1, x2, y2): the tight box of each mask, exclusive ends.
  labels     int32 [n]        class ids in 1..K-1.
  image_id   int64            the image's id in the source.
  file_name  text             the image's path relative to the images folder.
  height     int64            the source image's own height and width in pixels (its frame,
  width      int64            in which evaluation scores; `geometry.placement` maps the canvas to it).
"""

from __future__ import annotations

import collections
import hashlib
import os
import sys
import warnings

import numpy as np
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from jaxseg.data import shapes, storage
from jaxseg.errors import first_few

MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 4096
MAX_LABEL = 255  # semantic maps are stored as uint8 PNGs
DEFAULT_IGNORE_LABEL = 255
DEFAULT_VALIDATION_FRACTION = 0.1
SPLITS = ("train", "validation")
_REPORTED_ITEMS = 5


# --------------------------------------------------------------------------- parameters


def check_common_params(image_size, validation_fraction, ignore_label, num_classes) -> None:
    """Raises ValueError, the message starting with the parameter's name, if one is invalid.

    `num_classes`: the known class count K (1 where only the background is known yet); the
    ignore label must lie in [K, 255].
    """
    if not shapes.is_integer(image_size) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size={image_size!r} must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"
        )
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, (int, float)):
        raise ValueError(f"validation_fraction={validation_fraction!r} must be a number")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction={validation_fraction!r} must lie in (0, 1): both the "
            "train and the validation split need images"
        )
    if not shapes.is_integer(ignore_label) or not num_classes <= ignore_label <= MAX_LABEL:
        raise ValueError(
            f"ignore_label={ignore_label!r} must be an int in [{num_classes}, {MAX_LABEL}] "
            "(above the class ids, within 8 bits)"
        )


def check_path(field: str, path, *, directory: bool) -> str:
    """The absolute form of `path`; ValueError naming `field` if unset or not found."""
    kind = "directory" if directory else "file"
    if path is None or path == "":
        raise ValueError(f"{field} is not set: give the path of a {kind}")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{field}={path!r} must be a path")
    exists = os.path.isdir(path) if directory else os.path.isfile(path)
    if not exists:
        raise ValueError(f"{field}={os.fspath(path)!r}: no such {kind}")
    return os.path.abspath(path)


def check_split_paths(*fields: tuple[str, object, bool]):
    """The absolute paths of a split's own files, (name, path, is a directory) each, or None
    where all the paths are None (the split is then cut from the others' files); ValueError
    naming the field if one is unset or not found (`check_path`)."""
    if all(path is None for _, path, _ in fields):
        return None
    return tuple(check_path(name, path, directory=directory) for name, path, directory in fields)


def fingerprint(*parts: str) -> str:
    """A short hex digest of `parts` (paths, file stamps, options), for config names."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8"))
    return digest.hexdigest()[:16]


def file_stamp(directory: str, name: str) -> str:
    """`name` (a path relative to `directory`) with its file's size and modification time
    in ns, or "missing": changes when the file is added, deleted or rewritten."""
    try:
        status = os.stat(os.path.join(directory, name))
    except FileNotFoundError:
        return f"{name}:missing"
    return f"{name}:{status.st_size}:{status.st_mtime_ns}"


# --------------------------------------------------------------------------- splits


def validation_mask(names: list[str], fraction: float) -> np.ndarray:
    """bool [N]: which of N >= 2 images form the validation split.

    The images are ordered by the SHA-256 of their names (ties by position); the first
    round(fraction · N), at least 1 and at most N - 1, are the validation split.
    """
    if len(names) < 2:
        raise ValueError(
            f"need at least 2 usable images for a train and a validation split, got {len(names)}"
        )
    count = min(max(round(fraction * len(names)), 1), len(names) - 1)
    order = sorted(
        range(len(names)),
        key=lambda i: (hashlib.sha256(names[i].encode("utf-8")).hexdigest(), i),
    )
    mask = np.zeros(len(names), bool)
    mask[order[:count]] = True
    return mask


def split_items(items: list, names: list[str], fraction: float) -> dict[str, list]:
    """{"train": [...], "validation": [...]}: `items` split by `validation_mask(names, ...)`."""
    in_validation = validation_mask(names, fraction)
    return {
        split: [item for item, chosen in zip(items, in_validation) if chosen == wanted]
        for split, wanted in zip(SPLITS, (False, True))
    }


# --------------------------------------------------------------------------- features


def features(size: int) -> tfds.features.FeaturesDict:
    """The stored features of a folder dataset at image side `size` (module docstring)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "semantic": tfds.features.Image(shape=(size, size, 1), encoding_format="png"),
            "mask_rles": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            **source_image_features(),
        }
    )


def source_image_features() -> dict:
    """The stored features naming each example's source image: image_id, file_name, height
    and width (module docstring)."""
    return {
        "image_id": tfds.features.Scalar(dtype=np.int64),
        "file_name": tfds.features.Text(),
        "height": tfds.features.Scalar(dtype=np.int64),
        "width": tfds.features.Scalar(dtype=np.int64),
    }


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What the folder builders share: the version, the stored features (module docstring)
    at the config's `image_size` and a metadata dict; the subclass's module docstring is the
    dataset's description.

    Subclasses set `code_path = epath.Path(__file__)` (naming the file avoids TFDS's import
    of `importlib_resources`, as in shapes.py).
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.", "1.1.0": "The source image's height and width."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=sys.modules[type(self).__module__].__doc__,
            features=features(self.builder_config.image_size),
            metadata=tfds.core.MetadataDict(),
        )


def encode_example(
    image, semantic, masks, labels, image_id: int, file_name: str, source_hw: tuple[int, int]
) -> dict:
    """The stored form of one example.

    Args:
      image: uint8 [S, S, 3] canvas.
      semantic: uint8 [S, S].
      masks: uint8 [S, S, n] 0/1 instance masks, each with at least one pixel.
      labels: int [n] class ids 1..K-1.
      image_id: the image's id in the source.
      file_name: the image's path relative to the images folder.
      source_hw: (height, width) of the source image.
    """
    count = masks.shape[2]
    rles = mask_utils.encode(np.asfortranarray(masks, np.uint8)) if count else []
    boxes = [shapes.tight_boxes(masks[..., k], 1) for k in range(count)]
    return {
        "image": storage.png_bytes(image, compress_level=1),
        "semantic": storage.png_bytes(semantic, compress_level=1),
        "mask_rles": np.array([rle["counts"] for rle in rles], dtype=np.object_),
        "boxes": np.concatenate(boxes) if count else np.zeros((0, 4), np.float32),
        "labels": np.asarray(labels, np.int32).reshape(count),
        "image_id": int(image_id),
        "file_name": file_name,
        "height": int(source_hw[0]),
        "width": int(source_hw[1]),
    }


def decode_masks(rles: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [n, H, W] masks from the stored `mask_rles` (bytes [n]) of an H x W example."""
    if len(rles) == 0:
        return np.zeros((0, height, width), np.uint8)
    decoded = mask_utils.decode([{"size": [height, width], "counts": c} for c in rles])
    return np.ascontiguousarray(decoded.transpose(2, 0, 1))


# --------------------------------------------------------------------------- building


class SkipReport:
    """Collects what a build skips and warns once per reason, naming the first few items."""

    def __init__(self, source: str, notes: dict[str, str] | None = None):
        """`source`: what the warnings name first; `notes`: reason -> what its warning adds
        after the items."""
        self._source = source
        self._notes = notes or {}
        self._items: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, reason: str, item: str) -> None:
        self._items[reason].append(item)

    def warn(self) -> None:
        for reason, items in self._items.items():
            shown = first_few(items, _REPORTED_ITEMS, separator="; ")
            note = self._notes.get(reason, "")
            warnings.warn(
                f"{self._source}: skipped {len(items)} {reason}: {shown}{note}", stacklevel=2
            )
        self._items.clear()
