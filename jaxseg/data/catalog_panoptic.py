"""TFDS `coco/2017_panoptic`'s segments as the converted records store them (the thing
segments as instances, Panoptic FPN's semantic target as the semantic map), and its 133
categories with COCO's ids (scoring in the source frame: `catalog_truth`).

TFDS's ClassLabel orders the 133 COCO panoptic categories by increasing category id
(`jaxseg.data.coco_categories`): labels 0..79 are the 80 things, 80..132 the 53 stuff
categories. A pixel's segment id is R + 256 G + 65536 B of `panoptic_image`; id 0, and ids
that `panoptic_objects` does not list, are VOID.
"""

from __future__ import annotations

import numpy as np

from jaxseg.data import geometry, panoptic_format, shapes
from jaxseg.data.coco_categories import (
    COCO_CATEGORY_IDS,
    COCO_CLASS_NAMES,
    COCO_STUFF_CATEGORY_IDS,
    COCO_STUFF_CLASS_NAMES,
)
from jaxseg.ops.panoptic_fusion import THING_LABEL

NUM_THINGS = len(COCO_CATEGORY_IDS)
# TFDS label (0..132) -> COCO category id.
LABEL_CATEGORY_IDS = np.asarray(COCO_CATEGORY_IDS + COCO_STUFF_CATEGORY_IDS, np.int64)


def categories() -> list[dict]:
    """The 133 COCO panoptic categories ({"id", "name", "isthing"}) by increasing id."""
    names = COCO_CLASS_NAMES[1:] + COCO_STUFF_CLASS_NAMES[1:]
    return [
        {"id": int(category_id), "name": name, "isthing": int(label < NUM_THINGS)}
        for label, (category_id, name) in enumerate(zip(LABEL_CATEGORY_IDS, names))
    ]


def segment_ids_of(example: dict) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [n] the ids of `panoptic_objects`, int64 [h, w] each pixel's segment id) of a
    `coco/2017_panoptic` example."""
    listed = np.asarray(example["panoptic_objects"]["id"], np.int64).reshape(-1)
    return listed, panoptic_format.rgb_to_ids(np.asarray(example["panoptic_image"]))


def listed_positions(pixel_ids: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """int64 [h, w]: each pixel's position in `segment_ids` [n] (`panoptic_objects`' ids), -1
    on VOID (id 0, or an id not listed)."""
    positions = panoptic_format.segment_positions(pixel_ids, segment_ids)
    return np.where(pixel_ids == panoptic_format.VOID, -1, positions)


def semantic_target(
    pixel_ids: np.ndarray, segment_ids: np.ndarray, labels: np.ndarray, ignore_label: int
) -> np.ndarray:
    """uint8 [h, w] Panoptic FPN's semantic target of the segment ids int64 [h, w].

    0 (`THING_LABEL`) on every thing pixel, crowd segments included (as detectron2's Panoptic
    FPN targets), stuff label k = TFDS label - 79 (1..53, `COCO_STUFF_CLASS_NAMES[k]`) on
    stuff pixels, `ignore_label` on VOID.

    Args:
      pixel_ids: int64 [h, w] segment ids.
      segment_ids: int64 [n] `panoptic_objects`' ids.
      labels: int64 [n] their TFDS labels 0..132.
      ignore_label: above 53.
    """
    classes = np.where(labels < NUM_THINGS, THING_LABEL, labels - NUM_THINGS + 1)
    # Position -1 (VOID) reads the appended ignore label.
    lookup = np.append(classes, ignore_label).astype(np.uint8)
    return lookup[listed_positions(pixel_ids, segment_ids)]


def stored_segments(
    example: dict, labels: np.ndarray, crowd: np.ndarray, fit: geometry.Fit, ignore_label: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A `coco/2017_panoptic` example's segments on the stored S x S canvas of `fit`.

    Args:
      example: with panoptic_image uint8 [h, w, 3] and panoptic_objects' ids.
      labels: int64 [n] the objects' TFDS labels; crowd: bool [n] their `is_crowd`.
      fit: the canvas and resize (`geometry.Fit`); ignore_label: the semantic label of VOID
        and of the padding.

    Returns:
      semantic uint8 [S, S] (`semantic_target`), and the non-crowd thing segments that keep
      a pixel: masks uint8 [S, S, m] 0/1, their tight boxes float32 [m, 4] (x1, y1, x2, y2),
      labels int64 [m] 1..80.
    """
    segment_ids, pixel_ids = segment_ids_of(example)
    if len(segment_ids) != len(labels):
        raise ValueError("panoptic_objects: id and label have different lengths")
    pixel_ids = geometry.fit_nearest(pixel_ids, fit, panoptic_format.VOID)
    things = ~crowd & (labels < NUM_THINGS)
    masks = (pixel_ids[..., None] == segment_ids[things]).astype(np.uint8)
    present = masks.any(axis=(0, 1))
    masks, thing_labels = masks[..., present], labels[things][present] + 1
    # Segments do not overlap: number them 1..m in one map for their tight boxes.
    numbered = np.zeros((fit.canvas, fit.canvas), np.int64)
    for k in range(len(thing_labels)):
        numbered[masks[..., k] == 1] = k + 1
    boxes = shapes.tight_boxes(numbered, len(thing_labels))
    semantic = semantic_target(pixel_ids, segment_ids, labels, ignore_label)
    return semantic, masks, boxes, thing_labels
