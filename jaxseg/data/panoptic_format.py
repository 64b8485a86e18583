"""COCO's panoptic format: one RGB PNG of segment ids per image plus one JSON for the split.

A pixel's segment id is R + 256·G + 256²·B of its colour in the PNG; id 0 (black) is VOID,
a pixel of no segment. The JSON holds
  "categories":  [{"id", "name", "isthing" (0/1), ...}, ...]
  "annotations": [{"image_id", "file_name" (the PNG, in the split's folder),
                   "segments_info": [{"id", "category_id", "iscrowd" (0/1), "area", ...}]}]
(and for ground truth "images"). This module reads and writes both, checking what the PQ
computation and the dataset readers rely on; every problem is a one-line ValueError naming
the file and the entry.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image

from jaxseg.data.images import load_image

VOID = 0
# The largest id an RGB colour holds: 256³ - 1.
MAX_SEGMENT_ID = 256**3 - 1
_ID_MODES = ("RGB", "RGBA")


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """int64 [H, W] segment ids R + 256·G + 256²·B of the colours uint8 [H, W, 3(+1)]."""
    channels = rgb[..., :3].astype(np.int64)
    return channels[..., 0] + 256 * channels[..., 1] + 256 * 256 * channels[..., 2]


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] colours of the segment ids [H, W] (integers in 0..256³ - 1)."""
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise ValueError(f"segment ids must lie in 0..{MAX_SEGMENT_ID}, got {ids.min()}..{ids.max()}")
    return np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256)], axis=-1).astype(np.uint8)


def segment_positions(ids: np.ndarray, table_ids: np.ndarray) -> np.ndarray:
    """int64, the shape of `ids`: the position of each of `ids` in `table_ids` [S] (e.g. a
    segments_info's ids), -1 where absent."""
    ids = np.asarray(ids)
    if table_ids.size == 0:
        return np.full(ids.shape, -1, np.int64)
    order = np.argsort(table_ids)
    found = np.clip(np.searchsorted(table_ids[order], ids), 0, table_ids.size - 1)
    positions = order[found]
    return np.where(table_ids[positions] == ids, positions, -1)


def read_id_png(path) -> np.ndarray:
    """int64 [H, W] segment ids of the panoptic PNG `path` (RGB, or RGBA with alpha ignored).

    Raises:
      ValueError: not a readable image, or one of another mode (one line naming the file).
    """
    image = load_image(path)
    if image.mode not in _ID_MODES:
        raise ValueError(
            f"{os.fspath(path)}: a panoptic PNG stores segment ids as RGB colours, got an "
            f"image of mode {image.mode}"
        )
    return rgb_to_ids(np.asarray(image))


def write_id_png(path, ids: np.ndarray) -> None:
    """Writes the segment ids int [H, W] to `path` as an RGB PNG."""
    Image.fromarray(ids_to_rgb(ids), mode="RGB").save(os.fspath(path))


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{where}: {message}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_categories(categories: Any, where: str) -> None:
    _require(isinstance(categories, list) and categories, where, "'categories' must be a non-empty list")
    names, ids = set(), set()
    for position, category in enumerate(categories):
        at = f"{where}: categories[{position}]"
        _require(isinstance(category, dict), at, "must be an object")
        for key in ("id", "name", "isthing"):
            _require(key in category, at, f"has no {key!r}")
        _require(_is_integer(category["id"]) and category["id"] > 0, at, "'id' must be a positive integer")
        _require(category["isthing"] in (0, 1), at, "'isthing' must be 0 or 1")
        _require(category["id"] not in ids, at, f"category id {category['id']} is used twice")
        _require(category["name"] not in names, at, f"category name {category['name']!r} is used twice")
        ids.add(category["id"])
        names.add(category["name"])


def _check_annotation(annotation: Any, at: str, with_area: bool) -> None:
    _require(isinstance(annotation, dict), at, "must be an object")
    for key in ("image_id", "file_name", "segments_info"):
        _require(key in annotation, at, f"has no {key!r}")
    _require(isinstance(annotation["segments_info"], list), at, "'segments_info' must be a list")
    segment_ids = set()
    for position, segment in enumerate(annotation["segments_info"]):
        where = f"{at}.segments_info[{position}]"
        _require(isinstance(segment, dict), where, "must be an object")
        _require("id" in segment and "category_id" in segment, where, "needs 'id' and 'category_id'")
        identifier = segment["id"]
        _require(
            _is_integer(identifier) and 0 < identifier <= MAX_SEGMENT_ID,
            where,
            f"'id' must be an integer in 1..{MAX_SEGMENT_ID} (0 is VOID), got {identifier!r}",
        )
        _require(identifier not in segment_ids, where, f"segment id {identifier} is used twice")
        segment_ids.add(identifier)
        _require(segment.get("iscrowd", 0) in (0, 1), where, "'iscrowd' must be 0 or 1")
        if with_area:
            _require(_is_integer(segment.get("area")), where, "ground truth needs an integer 'area'")


def load_panoptic_json(path, ground_truth: bool) -> dict:
    """The COCO panoptic JSON at `path`, checked.

    Ground truth (`ground_truth=True`) must have "categories" and each segment an integer
    "area" (the PQ uses the ground truth's areas as given, as panopticapi does); predictions
    need only "annotations". Image ids must be unique.

    Raises:
      ValueError: unreadable, not JSON, or a missing or malformed entry (one line).
    """
    path = os.fspath(path)
    try:
        with open(path) as file:
            data = json.load(file)
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    _require(isinstance(data, dict), path, "expected a JSON object")
    _require(isinstance(data.get("annotations"), list), path, "no 'annotations' list; not a COCO panoptic JSON")
    if ground_truth:
        _require("categories" in data, path, "no 'categories'; not a COCO panoptic ground truth JSON")
        _check_categories(data["categories"], path)
    image_ids = set()
    for position, annotation in enumerate(data["annotations"]):
        at = f"{path}: annotations[{position}]"
        _check_annotation(annotation, at, with_area=ground_truth)
        _require(annotation["image_id"] not in image_ids, at, f"image id {annotation['image_id']!r} is used twice")
        image_ids.add(annotation["image_id"])
    return data


def write_panoptic_json(path, annotations: list[dict], categories: list[dict], **extra) -> None:
    """Writes a COCO panoptic JSON of `annotations` and `categories` (plus `extra` keys,
    e.g. images=[...]) to `path`."""
    with open(os.fspath(path), "w") as file:
        json.dump({"annotations": annotations, "categories": categories, **extra}, file)
