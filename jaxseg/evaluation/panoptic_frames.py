"""The frame a split's panoptic predictions are scored in: its categories, ground truth and
geometry (the panoptic counterpart of `jaxseg.evaluation.frames`).

A dataset kind may register a `panoptic_frame(data_config, source)` builder
(`registry.DATASETS`); without one a split is scored on its canvases (`canvas_frame`).
Predictions are fused at each example's frame size: masks pasted at the source image's
size, the semantic map's valid region resized back (`geometry.Placement`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from jaxseg.data import geometry
from jaxseg.evaluation import frames
from jaxseg.ops.panoptic_fusion import THING_LABEL


@dataclasses.dataclass(frozen=True)
class PanopticFrame:
    """Where and against what a split's panoptic maps are scored.

    categories: COCO panoptic categories ({"id", "name", "isthing"}), as PQ reports them.
    thing_ids: `thing_ids[k]` is the category id of thing label k >= 1 ([0] unused).
    stuff_ids: `stuff_ids[k]` is the category id of stuff label k >= 1 ([0] unused).
    ground_truth: example index -> (ids int [h, w], COCO segments_info with "id",
      "category_id", "iscrowd", "area") in the frame's pixels.
    placements: `placements[i]` is where example i's image lies on its canvas.
    image_ids: `image_ids[i]` is the frame's id of example i (exports use it).
    """

    categories: list[dict]
    thing_ids: tuple[int, ...]
    stuff_ids: tuple[int, ...]
    ground_truth: Callable[[int], tuple[np.ndarray, list[dict]]]
    placements: tuple[geometry.Placement, ...]
    image_ids: tuple

    def category_id(self, segment: Mapping) -> int:
        """The category id of a fused segment ("isthing", "label")."""
        return segment_category_id(self.thing_ids, self.stuff_ids, segment)


def segment_category_id(thing_ids, stuff_ids, segment: Mapping) -> int:
    """The category id of a fused segment ("isthing", "label") under a frame's `thing_ids`
    and `stuff_ids` (`PanopticFrame`)."""
    return (thing_ids if segment["isthing"] else stuff_ids)[segment["label"]]


def canvas_categories(class_names, stuff_class_names) -> list[dict]:
    """Categories of a canvas frame: thing label k >= 1 of `class_names` (the background
    first) has id k, stuff label k >= 1 of `stuff_class_names` (the thing class first) has
    id K - 1 + k."""
    things = [{"id": label, "name": name, "isthing": 1} for label, name in enumerate(class_names) if label]
    offset = len(class_names) - 1
    stuff = [{"id": offset + k, "name": name, "isthing": 0} for k, name in enumerate(stuff_class_names) if k]
    return things + stuff


def example_ground_truth(example: Mapping[str, np.ndarray], ignore_label: int) -> tuple[np.ndarray, list[dict]]:
    """An example's panoptic map on its canvas: ids int64 [S, S] (0 = VOID) and segments
    ("id", "isthing", "label", "area"; stuff label k >= 1 of `semantic`, things from `masks`
    [n, S, S] and `labels` [n], later masks over earlier ones). Thing-labelled pixels outside
    every mask, and `ignore_label` pixels, are VOID."""
    semantic = np.asarray(example["semantic"])
    ids = np.zeros(semantic.shape, np.int64)
    segments = []
    for label in np.unique(semantic):
        if label in (THING_LABEL, ignore_label):
            continue
        segments.append({"id": len(segments) + 1, "isthing": False, "label": int(label)})
        ids[semantic == label] = len(segments)
    for mask, label in zip(example["masks"], example["labels"]):
        segments.append({"id": len(segments) + 1, "isthing": True, "label": int(label)})
        ids[mask.astype(bool)] = len(segments)
    areas = np.bincount(ids.ravel(), minlength=len(segments) + 1)
    for segment in segments:
        segment["area"] = int(areas[segment["id"]])
    return ids, [s for s in segments if s["area"] > 0]


def canvas_frame(source, class_names, stuff_class_names, ignore_label: int) -> PanopticFrame:
    """The frame of a dataset scored on its canvases (the panoptic shapes): the ground truth
    is each example's `example_ground_truth`, image ids the examples' positions."""
    categories = canvas_categories(class_names, stuff_class_names)
    thing_ids = tuple(range(len(class_names)))
    stuff_ids = (0,) + tuple(len(class_names) - 1 + k for k in range(1, len(stuff_class_names)))

    def ground_truth(index: int):
        ids, segments = example_ground_truth(source[index], ignore_label)
        info = [{"id": s["id"], "category_id": (thing_ids if s["isthing"] else stuff_ids)[s["label"]],
                 "iscrowd": 0, "area": s["area"]} for s in segments]
        return ids, info

    return PanopticFrame(
        categories=categories,
        thing_ids=thing_ids,
        stuff_ids=stuff_ids,
        ground_truth=ground_truth,
        placements=frames.ids_and_placements(source)[1],
        image_ids=tuple(range(len(source))),
    )
