"""TFDS catalog examples converted to this project's records (see `jaxseg.data.catalog`).

Each `convert_*` takes a TFDS example as `as_data_source` returns it, the `geometry.Fit`
and the ignore label, and returns a record: the fitted uint8 canvas, semantic map, masks as
RLE counts, boxes and labels at the stored size, and the source size and image id.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from jaxseg.data import catalog_panoptic, geometry


PET_CLASS_NAMES = ("background", "pet", "border")
# Trimap value -> class id (values other than 1, 2, 3 are rejected before the lookup).
_TRIMAP_CLASSES = np.zeros(256, np.uint8)
_TRIMAP_CLASSES[[1, 2, 3]] = (1, 0, 2)


# --------------------------------------------------------------------------- conversion


def _checked_image(example: dict) -> np.ndarray:
    image = np.asarray(example["image"])
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    return image


def _record(image, semantic, masks, boxes, labels, *, source_hw, image_id=None) -> dict:
    """The example in the form `pipeline.DecodedSource` reads (the folder datasets' features).

    Args:
      image: uint8 [S, S, 3].
      semantic: uint8 [S, S].
      masks: uint8 [S, S, n] 0/1.
      boxes: float [n, 4] (x1, y1, x2, y2).
      labels: int [n] class ids 1..K-1.
      source_hw: (height, width) of the TFDS image.
      image_id: the TFDS example's `image/id`, if it has one.
    """
    rles = mask_utils.encode(np.asfortranarray(masks, np.uint8)) if masks.shape[2] else []
    identity = {} if image_id is None else {"image_id": int(image_id)}
    return {
        **identity,
        "height": int(source_hw[0]),
        "width": int(source_hw[1]),
        "image": image,
        "semantic": semantic[..., None],
        "mask_rles": np.array([rle["counts"] for rle in rles], dtype=np.object_),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int32).reshape(-1),
    }


def convert_pet(example: dict, fit: geometry.Fit, ignore_label: int) -> dict:
    """An `oxford_iiit_pet` example (image uint8 [h, w, 3], segmentation_mask uint8 [h, w, 1]
    trimap) as a record: semantic classes 0 background, 1 pet, 2 border; no instances."""
    image = _checked_image(example)
    trimap = np.asarray(example["segmentation_mask"])[..., 0]
    if trimap.shape != image.shape[:2]:
        raise ValueError(
            f"oxford_iiit_pet: segmentation_mask {trimap.shape} and image {image.shape[:2]} "
            "differ in size"
        )
    values = np.unique(trimap)
    if not np.isin(values, (1, 2, 3)).all():
        raise ValueError(
            f"oxford_iiit_pet: trimap values {values.tolist()}; expected 1 (pet), "
            "2 (background), 3 (border)"
        )
    semantic = geometry.fit_nearest(_TRIMAP_CLASSES[trimap], fit, ignore_label)
    canvas, _ = geometry.fit_image(image, fit)
    return _record(
        canvas,
        semantic,
        np.zeros((fit.canvas, fit.canvas, 0), np.uint8),
        np.zeros((0, 4)),
        [],
        source_hw=image.shape[:2],
    )


def coco_objects(example: dict, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bbox float [n, 4], label int64 [n], is_crowd bool [n]) of a COCO objects sequence."""
    objects = example[key]
    bbox = np.asarray(objects["bbox"], np.float64).reshape(-1, 4)
    labels = np.asarray(objects["label"], np.int64).reshape(-1)
    crowd = np.asarray(objects["is_crowd"], bool).reshape(-1)
    if not len(bbox) == len(labels) == len(crowd):
        raise ValueError(
            f"{key}: bbox, label and is_crowd have different lengths "
            f"({len(bbox)}, {len(labels)}, {len(crowd)})"
        )
    return bbox, labels, crowd


def _instances_record(
    image, masks, boxes, labels, fit: geometry.Fit, ignore_label: int, image_id
) -> dict:
    """Record of an image uint8 [h, w, 3] (TFDS `image/id` `image_id`) and its instances at
    the stored size.

    masks uint8 [S, S, n], boxes [n, 4], labels [n] (1..80); the semantic map is 0 in the
    image, `ignore_label` in the padding, each mask painted with its label in order.
    """
    height, width = image.shape[:2]
    semantic = geometry.fit_nearest(np.zeros((height, width), np.uint8), fit, ignore_label)
    for k, label in enumerate(labels):
        semantic[masks[..., k].astype(bool)] = label
    canvas, _ = geometry.fit_image(image, fit)
    return _record(canvas, semantic, masks, boxes, labels, source_hw=(height, width),
                   image_id=image_id)


def covered_pixels(boxes: np.ndarray, size_xy: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """int64 (first [n, 2], end [n, 2]): per axis (x, y), the first and one-past-last pixel
    whose centre lies in each of `boxes [n, 4]` (x1, y1, x2, y2), within an image of
    (width, height) `size_xy`; end <= first where a box covers no pixel centre."""
    limits = np.asarray(size_xy, np.float64)
    first = np.clip(np.ceil(boxes[:, :2] - 0.5), 0, limits).astype(np.int64)
    end = np.clip(np.ceil(boxes[:, 2:] - 0.5), 0, limits).astype(np.int64)
    return first, end


def convert_coco_boxes(example: dict, fit: geometry.Fit, ignore_label: int) -> dict:
    """A `coco/2017` or `coco/2014` example (image, objects: bbox, label, is_crowd) as a
    record with box-shaped masks: pixel (row r, column c) lies in box (x1, y1, x2, y2) when
    y1 <= r + 0.5 < y2 and x1 <= c + 0.5 < x2."""
    image = _checked_image(example)
    bbox, tfds_labels, crowd = coco_objects(example, "objects")
    height, width = geometry.resized_shape(image.shape[0], image.shape[1], fit)
    boxes = bbox[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float64)
    first, end = covered_pixels(boxes, (width, height))
    kept = np.flatnonzero(~crowd & (end > first).all(axis=1))
    masks = np.zeros((fit.canvas, fit.canvas, len(kept)), np.uint8)
    for k, index in enumerate(kept):
        (x1, y1), (x2, y2) = first[index], end[index]
        masks[y1:y2, x1:x2, k] = 1
    return _instances_record(
        image, masks, boxes[kept], tfds_labels[kept] + 1, fit, ignore_label,
        example.get("image/id"),
    )


def convert_coco_panoptic(example: dict, fit: geometry.Fit, ignore_label: int) -> dict:
    """A `coco/2017_panoptic` example (image, panoptic_image uint8 [h, w, 3], panoptic_objects:
    id, bbox, label, is_crowd) as a record of its non-crowd thing segments and semantic map."""
    image = _checked_image(example)
    panoptic = np.asarray(example["panoptic_image"])
    if panoptic.shape != image.shape:
        raise ValueError(
            f"coco panoptic: panoptic_image {panoptic.shape} and image {image.shape} differ"
        )
    _, tfds_labels, crowd = coco_objects(example, "panoptic_objects")
    semantic, masks, boxes, labels = catalog_panoptic.stored_segments(
        example, tfds_labels, crowd, fit, ignore_label
    )
    canvas, _ = geometry.fit_image(image, fit)
    return _record(canvas, semantic, masks, boxes, labels, source_hw=image.shape[:2],
                   image_id=example.get("image/id"))
