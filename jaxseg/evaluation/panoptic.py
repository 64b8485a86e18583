"""Panoptic quality (PQ, SQ, RQ) by the COCO panoptic definition, as panopticapi computes it.

Kirillov et al., "Panoptic Segmentation" (2019). In each image a predicted segment matches
a ground-truth segment of the same category when their IoU exceeds 0.5 (so a match is
unique). Per category c over the split, with TP the matches, FP the unmatched predictions
and FN the unmatched ground truth:

  PQ_c = sum of the matches' IoU / (TP + FP/2 + FN/2) = SQ_c · RQ_c
  SQ_c = sum of IoU / TP   (0 without matches),   RQ_c = TP / (TP + FP/2 + FN/2)

PQ, SQ and RQ are means over the categories with TP + FP + FN > 0; "things" and "stuff"
average the thing and stuff categories alone.

VOID and crowd regions, exactly as panopticapi's `pq_compute`:
- Pixels of id 0 (VOID) in either map belong to no segment. A pair's union leaves out the
  predicted segment's VOID pixels: union = |pred| + |gt| - |pred ∩ gt| - |pred ∩ VOID|.
- Crowd ground truth (iscrowd 1) is never matched and never a false negative.
- An unmatched prediction is not a false positive when more than half of its pixels lie on
  VOID or on the crowd region of its category. (Like panopticapi, one crowd segment per
  category counts: the last in the image's segments_info; COCO has at most one.)
- Ground-truth areas are the JSON's "area"s, predicted areas are pixel counts.
Where panopticapi reports 0.0 for a category absent from both (and leaves it out of the
means) and fails on a group without categories, `PQAccumulator.summary` gives NaN.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from jaxseg.data import panoptic_format

_OFFSET = 256**3
_MATCH_IOU = 0.5
_IGNORED_FRACTION = 0.5
GROUPS = (("", None), ("_things", True), ("_stuff", False))


def _segment_table(segments: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """int64 [S] arrays "id", "category_id", "iscrowd" of `segments` (COCO segments_info)."""
    return {
        "id": np.asarray([s["id"] for s in segments], np.int64),
        "category_id": np.asarray([s["category_id"] for s in segments], np.int64),
        "iscrowd": np.asarray([s.get("iscrowd", 0) for s in segments], np.int64),
    }


@dataclasses.dataclass(frozen=True)
class ImageCounts:
    """One image's share of a `PQAccumulator`'s sums, by category position (int64 arrays):
    the categories of its matches and their IoUs (float64), of its unmatched ground truth
    and of its false positives. Accumulated in one order, shares give the same sums
    wherever they were counted."""

    matched: np.ndarray
    iou: np.ndarray
    missed: np.ndarray
    false_positive: np.ndarray


class PQAccumulator:
    """Per-category sums of matched IoU, TP, FP and FN over the images added.

    Memory is four numbers per category, whatever the number of images. `count` gives an
    image's share without adding it, `add_counts` adds a share: images counted on other
    processes and added in the split's order give the sums of one process, to the bit.

    Args:
      categories: COCO panoptic categories, [{"id", "name", "isthing"}, ...].
    """

    def __init__(self, categories: Sequence[Mapping]):
        self.categories = [dict(c) for c in categories]
        self._index = {c["id"]: k for k, c in enumerate(self.categories)}
        count = len(self.categories)
        self.iou = np.zeros(count, np.float64)
        self.tp = np.zeros(count, np.int64)
        self.fp = np.zeros(count, np.int64)
        self.fn = np.zeros(count, np.int64)

    def _category_positions(self, category_ids: np.ndarray, where: str) -> np.ndarray:
        unknown = sorted(set(category_ids.tolist()) - set(self._index))
        if unknown:
            raise ValueError(f"{where}: category ids {unknown} are not among the categories")
        return np.asarray([self._index[c] for c in category_ids.tolist()], np.int64)

    def add(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Mapping],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Mapping],
        where: str = "image",
    ) -> None:
        """Counts one image (`count`) and adds it (`add_counts`)."""
        self.add_counts(self.count(gt_ids, gt_segments, pred_ids, pred_segments, where))

    def add_counts(self, counts: ImageCounts) -> None:
        """Adds one image's share (`count`)."""
        np.add.at(self.tp, counts.matched, 1)
        np.add.at(self.iou, counts.matched, counts.iou)
        np.add.at(self.fn, counts.missed, 1)
        np.add.at(self.fp, counts.false_positive, 1)

    def count(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Mapping],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Mapping],
        where: str = "image",
    ) -> ImageCounts:
        """One image's share of the sums, not added: segment-id maps int [H, W] (0 = VOID)
        of the ground truth and the prediction, with their segments_info (ground truth
        with "area"s).

        Raises:
          ValueError: maps of different shapes, a predicted id in the map but not in
            `pred_segments` or the other way round, or an unknown category (one line
            beginning with `where`).
        """
        gt_ids = np.asarray(gt_ids, np.int64)
        pred_ids = np.asarray(pred_ids, np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(
                f"{where}: the prediction is {pred_ids.shape[:2]} pixels, the ground truth {gt_ids.shape[:2]}"
            )
        gt = _segment_table(gt_segments)
        gt["area"] = np.asarray([s["area"] for s in gt_segments], np.int64)
        pred = _segment_table(pred_segments)
        gt_category = self._category_positions(gt["category_id"], f"{where} ground truth")
        pred_category = self._category_positions(pred["category_id"], f"{where} prediction")

        map_ids, map_areas = np.unique(pred_ids, return_counts=True)
        painted = map_ids != panoptic_format.VOID
        map_ids, map_areas = map_ids[painted], map_areas[painted]
        in_json = panoptic_format.segment_positions(map_ids, pred["id"])
        if (in_json < 0).any():
            raise ValueError(f"{where}: predicted segment ids {map_ids[in_json < 0].tolist()} are in the PNG but not in segments_info")
        pred["area"] = np.zeros(pred["id"].size, np.int64)
        pred["area"][in_json] = map_areas
        if (pred["area"] == 0).any():
            missing = pred["id"][pred["area"] == 0].tolist()
            raise ValueError(f"{where}: predicted segment ids {missing} are in segments_info but not in the PNG")

        codes, overlaps = np.unique(gt_ids * _OFFSET + pred_ids, return_counts=True)
        pair_gt = panoptic_format.segment_positions(codes // _OFFSET, gt["id"])
        pair_pred = panoptic_format.segment_positions(codes % _OFFSET, pred["id"])
        on_void = np.zeros(pred["id"].size, np.int64)
        from_void = (codes // _OFFSET == panoptic_format.VOID) & (pair_pred >= 0)
        on_void[pair_pred[from_void]] = overlaps[from_void]

        known = (pair_gt >= 0) & (pair_pred >= 0)
        g, p, overlap = pair_gt[known], pair_pred[known], overlaps[known]
        union = pred["area"][p] + gt["area"][g] - overlap - on_void[p]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = overlap / union
        matched = (gt["iscrowd"][g] == 0) & (gt["category_id"][g] == pred["category_id"][p]) & (iou > _MATCH_IOU)
        gt_matched = np.zeros(gt["id"].size, bool)
        gt_matched[g[matched]] = True
        missed = ~gt_matched & (gt["iscrowd"] == 0)

        crowd_of_category = {c: k for k, (c, crowd) in enumerate(zip(gt["category_id"], gt["iscrowd"])) if crowd}
        on_crowd = np.zeros(pred["id"].size, np.int64)
        for k, category in enumerate(pred["category_id"].tolist()):
            crowd = crowd_of_category.get(category)
            if crowd is not None:
                on_crowd[k] = overlap[(g == crowd) & (p == k)].sum()
        pred_matched = np.zeros(pred["id"].size, bool)
        pred_matched[p[matched]] = True
        ignored = (on_void + on_crowd) / np.maximum(pred["area"], 1) > _IGNORED_FRACTION
        false_positive = ~pred_matched & ~ignored
        return ImageCounts(
            matched=gt_category[g[matched]],
            iou=iou[matched],
            missed=gt_category[missed],
            false_positive=pred_category[false_positive],
        )

    def per_category(self) -> dict[str, np.ndarray]:
        """float64 [K] "pq", "sq", "rq" of each category (NaN where TP + FP + FN = 0)."""
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        with np.errstate(divide="ignore", invalid="ignore"):
            pq = np.where(denominator > 0, self.iou / denominator, np.nan)
            sq = np.where(self.tp > 0, self.iou / np.maximum(self.tp, 1), 0.0)
            rq = np.where(denominator > 0, self.tp / denominator, np.nan)
        return {"pq": pq, "sq": np.where(denominator > 0, sq, np.nan), "rq": rq}

    def summary(self) -> dict[str, float]:
        """A flat dict: "pq", "sq", "rq" (means over the categories that occur), the same
        with "_things" and "_stuff" suffixes, "n", "n_things", "n_stuff" (how many categories
        each mean is over) and "pq/<name>", "sq/<name>", "rq/<name>" per category."""
        values = self.per_category()
        isthing = np.asarray([c["isthing"] == 1 for c in self.categories], bool)
        occurs = ~np.isnan(values["pq"])
        results: dict[str, float] = {}
        for suffix, things in GROUPS:
            members = occurs if things is None else occurs & (isthing == things)
            for name in ("pq", "sq", "rq"):
                results[name + suffix] = float(values[name][members].mean()) if members.any() else float("nan")
            results["n" + suffix] = int(members.sum())
        for k, category in enumerate(self.categories):
            for name in ("pq", "sq", "rq"):
                results[f"{name}/{category['name']}"] = float(values[name][k])
        return results


def _annotations_by_image(annotations: Iterable[Mapping]) -> dict:
    return {annotation["image_id"]: annotation for annotation in annotations}


def evaluate_files(gt_json, gt_dir, pred_json, pred_dir, progress: bool = True) -> dict[str, float]:
    """PQ of COCO-panoptic-format predictions against COCO-panoptic-format ground truth.

    Args:
      gt_json, gt_dir: the ground truth's JSON and the folder of its PNGs.
      pred_json, pred_dir: the predictions' JSON and PNGs; every ground-truth image needs
        one prediction (extra predicted images are ignored, as in panopticapi).
      progress: show a progress bar over the images.

    Returns:
      `PQAccumulator.summary()`: pq, sq, rq, pq_things, ..., pq/<class name>, fractions in
      [0, 1] (NaN where undefined, see the module docstring).

    Raises:
      ValueError: a malformed JSON or PNG, a ground-truth image without prediction, or
        PNG and JSON that disagree (one line naming the file).
    """
    gt = panoptic_format.load_panoptic_json(gt_json, ground_truth=True)
    predictions = _annotations_by_image(panoptic_format.load_panoptic_json(pred_json, ground_truth=False)["annotations"])
    missing = [a["image_id"] for a in gt["annotations"] if a["image_id"] not in predictions]
    if missing:
        raise ValueError(f"{os.fspath(pred_json)}: no prediction for {len(missing)} ground-truth images, e.g. image id {missing[0]!r}")
    accumulator = PQAccumulator(gt["categories"])
    for gt_annotation in tqdm(gt["annotations"], desc="PQ", unit="image", disable=not progress):
        prediction = predictions[gt_annotation["image_id"]]
        pred_png = os.path.join(os.fspath(pred_dir), prediction["file_name"])
        accumulator.add(
            panoptic_format.read_id_png(os.path.join(os.fspath(gt_dir), gt_annotation["file_name"])),
            gt_annotation["segments_info"],
            panoptic_format.read_id_png(pred_png),
            prediction["segments_info"],
            where=pred_png,
        )
    return accumulator.summary()
