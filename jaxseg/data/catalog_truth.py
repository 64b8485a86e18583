"""The TFDS COCO examples' own ground truth, in the source image's pixels, for evaluation.

Training reads the examples converted to the stored size (`jaxseg.data.catalog`); scoring
reads them as TFDS gives them: every object, crowd regions included (`iscrowd` 1), at the
image's own size, with COCO's category ids (1..90: TFDS's 80 thing labels are COCO's
categories by increasing id).

- coco/2017, coco/2014: TFDS keeps boxes only; an object's mask is the pixels whose centres
  lie in its box (the converter's rule, at the source size).
- coco/2017_panoptic: the segments of the 80 thing classes, decoded from `panoptic_image`
  (segment id = R + 256 G + 65536 B).
Objects that cover no pixel are left out. Panoptic FPN scores `coco/2017_panoptic` against
`coco_panoptic_ground_truth`: every segment, things and stuff, with COCO's category ids.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxseg.data import catalog_examples, catalog_panoptic, panoptic_format


@dataclasses.dataclass(frozen=True)
class SourceObject:
    """One annotated object: its label (1..80), whether it is a crowd region, and its mask
    uint8 [h, w] 0/1 at the source image's size."""

    label: int
    crowd: bool
    mask: np.ndarray


def coco_box_objects(example: dict) -> list[SourceObject]:
    """The objects of a `coco/2017` or `coco/2014` example, each mask its box's pixels."""
    height, width = np.asarray(example["image"]).shape[:2]
    bbox, labels, crowd = catalog_examples.coco_objects(example, "objects")
    boxes = bbox[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float64)
    first, end = catalog_examples.covered_pixels(boxes, (width, height))
    found = []
    for index in np.flatnonzero((end > first).all(axis=1)):
        mask = np.zeros((height, width), np.uint8)
        (x1, y1), (x2, y2) = first[index], end[index]
        mask[y1:y2, x1:x2] = 1
        found.append(SourceObject(int(labels[index]) + 1, bool(crowd[index]), mask))
    return found


def coco_panoptic_objects(example: dict) -> list[SourceObject]:
    """The thing segments of a `coco/2017_panoptic` example, crowd segments included."""
    _, labels, crowd = catalog_examples.coco_objects(example, "panoptic_objects")
    segment_ids, pixel_ids = catalog_panoptic.segment_ids_of(example)
    found = []
    for segment, label, is_crowd in zip(segment_ids, labels, crowd):
        if label >= catalog_panoptic.NUM_THINGS:
            continue
        mask = (pixel_ids == segment).astype(np.uint8)
        if mask.any():
            found.append(SourceObject(int(label) + 1, bool(is_crowd), mask))
    return found


def coco_panoptic_ground_truth(example: dict) -> tuple[np.ndarray, list[dict]]:
    """A `coco/2017_panoptic` example's panoptic ground truth at its own size (h, w).

    Returns:
      ids int64 [h, w]: each pixel's segment id from `panoptic_image`, 0 (VOID) where
        `panoptic_objects` does not list it.
      segments_info: one {"id", "category_id" (COCO's), "iscrowd" (0/1), "area"} per listed
        segment. The area is TFDS's `area` (COCO's, the segment's pixel count in COCO's
        PNG) where the example has that field, else the segment's pixel count here.
    """
    _, labels, crowd = catalog_examples.coco_objects(example, "panoptic_objects")
    segment_ids, pixel_ids = catalog_panoptic.segment_ids_of(example)
    positions = catalog_panoptic.listed_positions(pixel_ids, segment_ids)
    areas = example["panoptic_objects"].get("area")
    if areas is None:
        areas = np.bincount(positions.ravel() + 1, minlength=len(segment_ids) + 1)[1:]
    info = [
        {"id": int(segment), "category_id": int(catalog_panoptic.LABEL_CATEGORY_IDS[label]),
         "iscrowd": int(is_crowd), "area": int(area)}
        for segment, label, is_crowd, area in zip(
            segment_ids, labels, crowd, np.asarray(areas).reshape(-1), strict=True
        )
    ]
    return np.where(positions >= 0, pixel_ids, panoptic_format.VOID), info


OBJECTS = {
    "coco/2017": coco_box_objects,
    "coco/2014": coco_box_objects,
    "coco/2017_panoptic": coco_panoptic_objects,
}
