"""Host-side (numpy) fusion of instance and semantic outputs into one panoptic map.

Panoptic FPN's heuristic, as detectron2 combines its two outputs:
1. Instances in descending score order, down to `score_threshold`. An instance whose
   mask is empty, or whose pixels are more than `overlap_threshold` already taken by
   instances placed before it, is skipped; otherwise it takes its still-free pixels.
2. Then each stuff class of the semantic map (labels other than the thing class 0), in
   increasing label order, takes its still-free pixels, unless they number fewer than
   `stuff_area_limit`.
Pixels left over are VOID (segment id 0). Segment ids are 1, 2, ... in placing order.
"""

from __future__ import annotations

import numpy as np

THING_LABEL = 0


def fuse_panoptic(
    masks: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    valid: np.ndarray,
    semantic: np.ndarray,
    *,
    score_threshold: float,
    overlap_threshold: float,
    stuff_area_limit: int,
) -> tuple[np.ndarray, list[dict]]:
    """One image's panoptic map (see the module docstring).

    Args:
      masks: bool [D, H, W], the detections' binary masks.
      scores: float [D]; classes: int [D] (thing labels 1..K-1); valid: bool [D].
      semantic: int [H, W] semantic labels (0 = thing, 1.. = stuff classes).
      score_threshold, overlap_threshold, stuff_area_limit: see the module docstring.

    Returns:
      ids int32 [H, W] (0 = VOID) and one dict per segment, in id order: "id", "isthing"
      (bool), "label" (the thing class, or the stuff label), "area" (pixels) and, for
      things, "score".
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or masks.shape[1:] != np.shape(semantic):
        raise ValueError(f"masks [D, H, W] must match semantic [H, W], got {masks.shape} and {np.shape(semantic)}")
    ids = np.zeros(masks.shape[1:], np.int32)
    segments: list[dict] = []
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    for slot in order:
        if not valid[slot]:
            continue
        if scores[slot] < score_threshold:
            break
        mask = masks[slot]
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & (ids == 0)
        taken = area - int(free.sum())
        if taken / area > overlap_threshold:
            continue
        ids[free] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "isthing": True, "label": int(classes[slot]),
                         "area": int(free.sum()), "score": float(scores[slot])})
    for label in np.unique(semantic):
        if label == THING_LABEL:
            continue
        free = (semantic == label) & (ids == 0)
        area = int(free.sum())
        if area < stuff_area_limit or area == 0:
            continue
        ids[free] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "isthing": False, "label": int(label), "area": area})
    return ids, segments
