"""COCO box and mask AP of instance predictions, computed by pycocotools.

The ground truth is a COCO-format dict: a dataset's own instances JSON, or one converted
from examples (`ground_truth_to_coco`; `write_coco_json` / `load_coco_json` store it); which
one a split uses is its frame's choice (`jaxseg.evaluation.frames`). A `COCOEvaluator`
built from it collects each image's detections (`add`) and runs
`pycocotools.cocoeval.COCOeval` for boxes ('bbox') and, when masks were given, masks
('segm'), over the evaluated images (`params.imgIds`).

Conventions:
- jaxseg boxes are (x1, y1, x2, y2) in pixels with exclusive ends; COCO boxes are
  [x, y, w, h] with w = x2 - x1 and h = y2 - y1.
- Detections carry the ground truth's category ids. `ground_truth_to_coco` uses the
  labels 1..K-1 as ids; `class_names[k]` names label k and `class_names[0]` is the
  background, which is never a category.
- Masks are stored as RLE from `pycocotools.mask.encode`, counts decoded to str (JSON).
- `ground_truth_to_coco` gives an annotation's `area` as its mask's pixel count, as in COCO's own
  annotations: both box and mask AP put an object in the small (area < 32²), medium
  (32² <= area < 96²) or large (area >= 96²) range by its mask area. (For detections,
  pycocotools uses the box's w·h in box AP and the mask area in mask AP; a detection's area
  only matters when it matches no ground truth.)
- Annotation ids start at 1: pycocotools records matches by annotation id and reads id 0
  as "unmatched".
- An image's id is the example's "image_id" if it has one, else its position in `examples`.
- COCO's limit of 100 detections per image applies: only the 100 highest scores count.

Empty and undefined cases:
- An AP whose population holds no ground-truth object (e.g. `box_ap_large` when no object
  is large, or every AP when the ground truth has no object at all) is undefined:
  pycocotools reports -1 there; `evaluate` reports NaN. Categories without ground truth
  are left out of the mean over categories (COCO's rule), and detections of them are
  not counted at all.
- No detections at all (no image added, or none valid) give AP 0.0 where ground truth
  exists. (pycocotools' `loadRes` fails on an empty result list; we evaluate against an
  empty result set instead.) Images never added count as images without detections.
- Detections on an image without ground truth of their category are false positives.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile

import faster_coco_eval
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Suffixes of the first six entries of `COCOeval.stats`: AP over IoU 0.5:0.95, AP at IoU
# 0.5, AP at IoU 0.75, and AP over IoU 0.5:0.95 for small, medium and large objects.
_STAT_SUFFIXES = ("", "50", "75", "_small", "_medium", "_large")
_UNDEFINED_STAT = -1.0
# The libraries that can score: pycocotools (the default, COCO's own) and faster-coco-eval
# (its C++ reimplementation; the same 12 numbers to 1e-9 in tests/test_coco_eval.py).
SCORERS = {
    "pycocotools": (COCO, COCOeval),
    "faster_coco_eval": (faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster),
}


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_class_names(class_names) -> list[str]:
    class_names = [str(name) for name in class_names]
    if len(class_names) < 2:
        raise ValueError(
            "class_names must hold the background name and at least one class name, got "
            f"{class_names!r}")
    return class_names


def _check_masks(masks, name: str) -> np.ndarray:
    """`[n, H, W]` uint8 in {0, 1} from bool or integer 0/1 masks."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{name} must have shape [n, H, W], got {masks.shape}")
    if masks.dtype != np.bool_:
        if not np.issubdtype(masks.dtype, np.integer):
            raise ValueError(f"{name} must be bool or integer 0/1, got dtype {masks.dtype}")
        if masks.size and (masks.min() < 0 or masks.max() > 1):
            raise ValueError(f"{name} must hold only 0 and 1")
    return masks.astype(np.uint8)


def _check_vector(values, count: int, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (count,):
        raise ValueError(f"{name} must have shape [{count}], got {values.shape}")
    return values


def _check_integers(values, count: int, name: str) -> np.ndarray:
    values = _check_vector(values, count, name)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {values.dtype}")
    return values.astype(np.int64)


def _check_boxes(boxes, name: str) -> np.ndarray:
    """`[n, 4]` float64 (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1 (not checked for NaN)."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [n, 4], got {boxes.shape}")
    return boxes.astype(np.float64)


def _check_finite_ordered_boxes(boxes: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name} must be finite")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(f"{name} must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")


def _to_xywh(boxes: np.ndarray) -> list[list[float]]:
    """COCO [x, y, w, h] lists from `[n, 4]` (x1, y1, x2, y2) boxes."""
    return [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in boxes]


def encode_masks(masks) -> list[dict]:
    """COCO RLEs of binary masks.

    Args:
      masks: `[n, H, W]` bool, or integer 0/1.

    Returns:
      n dicts {"size": [H, W], "counts": str} (`pycocotools.mask.decode` inverts them).
    """
    masks = _check_masks(masks, "masks")
    if len(masks) == 0:
        return []
    return encode_column_major(np.asfortranarray(masks.transpose(1, 2, 0)))


def encode_column_major(masks: np.ndarray) -> list[dict]:
    """COCO RLEs of `[H, W, n]` uint8 0/1 masks already in column-major (Fortran) order,
    as `pycocotools.mask.encode` takes them (no copy); same dicts as `encode_masks`."""
    rles = mask_utils.encode(masks)
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
            for rle in rles]


def encode_region(region: np.ndarray, top: int, left: int, height: int, width: int) -> dict:
    """The COCO RLE of a `[height, width]` binary mask that is zero outside `region` (bool
    `[h, w]` at rows `top:top + h`, columns `left:left + w`), the same dict as
    `encode_masks` gives for the whole mask, in time proportional to the region.

    The runs are found column by column in the region (RLE is column-major), joined where
    one ends at the image's bottom row and the next starts at the top of the next column,
    and compressed by pycocotools.
    """
    region = np.asarray(region, bool)
    rows, columns = region.shape
    if top < 0 or left < 0 or top + rows > height or left + columns > width:
        raise ValueError(f"a {rows} x {columns} region at ({top}, {left}) is not inside {height} x {width}")
    padded = np.zeros((columns, rows + 2), np.int8)
    padded[:, 1:-1] = region.T
    change = np.diff(padded, axis=1)
    start_column, start_row = np.nonzero(change == 1)
    end_column, end_row = np.nonzero(change == -1)
    starts = (left + start_column.astype(np.int64)) * height + top + start_row
    ends = (left + end_column.astype(np.int64)) * height + top + end_row
    if starts.size:
        apart = starts[1:] != ends[:-1]
        starts = starts[np.concatenate([[True], apart])]
        ends = ends[np.concatenate([apart, [True]])]
    bounds = np.concatenate([[0], np.stack([starts, ends], 1).ravel(), [height * width]])
    counts = np.diff(bounds).tolist()
    if len(counts) > 1 and counts[-1] == 0:  # ends on a run of ones, as pycocotools writes it
        counts.pop()
    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _image_id(example, position: int) -> int:
    image_id = example.get("image_id", position)
    if not _is_integer(image_id) or image_id < 0:
        raise ValueError(f"examples[{position}]['image_id'] must be a non-negative int, got {image_id!r}")
    return int(image_id)


def ground_truth_to_coco(examples, class_names) -> dict:
    """The COCO-format ground truth of a set of examples.

    Args:
      examples: iterable of dicts with masks `[n, H, W]` uint8 or bool, boxes `[n, 4]`
        float (x1, y1, x2, y2, exclusive ends, pixels), labels `[n]` int in 1..K-1, and
        optionally image_id (non-negative int; default: the example's position). n may
        be 0; the image size is taken from the masks.
      class_names: K names, `class_names[0]` the background.

    Returns:
      A JSON-serializable dict: "images" [{id, height, width}], "categories"
      [{id, name}] for ids 1..K-1, and "annotations" [{id (from 1), image_id,
      category_id, bbox [x, y, w, h], area (mask pixel count), iscrowd 0, segmentation
      (RLE, str counts)}].
    """
    class_names = _check_class_names(class_names)
    images, annotations, seen = [], [], set()
    for position, example in enumerate(examples):
        name = f"examples[{position}]"
        image_id = _image_id(example, position)
        if image_id in seen:
            raise ValueError(f"{name}: image_id {image_id} is used twice")
        seen.add(image_id)
        masks = _check_masks(example["masks"], f"{name}['masks']")
        count, height, width = masks.shape
        boxes = _check_boxes(example["boxes"], f"{name}['boxes']")
        if len(boxes) != count:
            raise ValueError(f"{name}['boxes'] has {len(boxes)} rows but masks has {count}")
        _check_finite_ordered_boxes(boxes, f"{name}['boxes']")
        labels = _check_integers(example["labels"], count, f"{name}['labels']")
        if np.any((labels < 1) | (labels >= len(class_names))):
            raise ValueError(f"{name}['labels'] must lie in [1, {len(class_names)}), got {labels.tolist()}")
        images.append({"id": image_id, "height": height, "width": width})
        areas = masks.sum(axis=(1, 2), dtype=np.int64)
        for bbox, label, area, rle in zip(_to_xywh(boxes), labels, areas, encode_masks(masks)):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(label),
                "bbox": bbox,
                "area": int(area),
                "iscrowd": 0,
                "segmentation": rle,
            })
    if not images:
        raise ValueError("examples must hold at least one example")
    categories = [{"id": label, "name": class_names[label]} for label in range(1, len(class_names))]
    return {"images": images, "categories": categories, "annotations": annotations}


def write_coco_json(path, coco_dict: dict) -> None:
    """Writes a COCO-format dict as JSON, atomically (parent directories are created)."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, suffix=".json.tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(coco_dict, file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_coco_json(path) -> dict:
    """Reads a dict written by `write_coco_json`."""
    with open(path) as file:
        return json.load(file)


def detections_to_coco(
    image_id, boxes, scores, classes, masks=None, valid=None, *, rles=None
) -> list[dict]:
    """COCO result dicts of one image's detections, as detectron2 writes them.

    Args:
      image_id: the image's id in the ground truth (non-negative int).
      boxes: `[D, 4]` float (x1, y1, x2, y2), pixels.
      scores: `[D]` float.
      classes: `[D]` int category ids (>= 1).
      masks: optional `[D, H, W]` bool or 0/1 full-image masks.
      valid: optional `[D]` bool; False marks padding, dropped (with its values unchecked).
        Default: all valid. D may be 0.
      rles: instead of `masks`, the COCO RLEs (`encode_masks`) of the valid detections'
        masks, in order.

    Returns:
      One result {image_id, category_id, score, bbox [x, y, w, h]} per valid detection,
      with its mask's RLE as "segmentation" when masks are given. Score boxes without the
      "segmentation" and masks without the "bbox" (`COCOEvaluator` does): pycocotools takes
      a result's area from its "bbox" when it has one.
    """
    if not _is_integer(image_id) or image_id < 0:
        raise ValueError(f"image_id must be a non-negative int, got {image_id!r}")
    boxes = _check_boxes(boxes, "boxes")
    count = len(boxes)
    scores = _check_vector(scores, count, "scores")
    if not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    classes = _check_integers(classes, count, "classes")
    keep = np.ones(count, bool) if valid is None else _check_vector(valid, count, "valid")
    if keep.dtype != np.bool_:
        raise ValueError(f"valid must be bool, got dtype {keep.dtype}")
    boxes, scores, classes = boxes[keep], scores[keep].astype(np.float64), classes[keep]
    _check_finite_ordered_boxes(boxes, "boxes (valid rows)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores (valid rows) must be finite")
    if np.any(classes < 1):
        raise ValueError(f"classes (valid rows) must be category ids >= 1, got {classes.tolist()}")
    results = [
        {"image_id": int(image_id), "category_id": int(label), "score": float(score), "bbox": bbox}
        for label, score, bbox in zip(classes, scores, _to_xywh(boxes))
    ]
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or len(masks) != count:
            raise ValueError(f"masks must have shape [{count}, H, W], got {masks.shape}")
        rles = encode_masks(_check_masks(masks[keep], "masks (valid rows)"))
    if rles is not None:
        if len(rles) != len(results):
            raise ValueError(f"rles must hold one RLE per valid detection ({len(results)})")
        for result, rle in zip(results, rles):
            result["segmentation"] = rle
    return results


def write_results(path, results: list[dict]) -> None:
    """Writes COCO results (`detections_to_coco` dicts) as a results JSON pycocotools reads."""
    write_coco_json(path, results)


@contextlib.contextmanager
def _silenced_stdout():
    """Swallows what pycocotools prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _scorer(name: str) -> tuple[type, type]:
    if name not in SCORERS:
        raise ValueError(f"scorer {name!r} is not one of {', '.join(SCORERS)}")
    return SCORERS[name]


def coco_index(dataset: dict, scorer: str = "pycocotools") -> COCO:
    """The `scorer` library's index (its `COCO`) of a COCO-format dict, built silently."""
    coco = _scorer(scorer)[0]()
    coco.dataset = dataset
    with _silenced_stdout():
        coco.createIndex()
    return coco


class COCOEvaluator:
    """Collects detections image by image and computes COCO box (and mask) AP.

    Usage: `evaluator = COCOEvaluator(ground_truth, image_ids)`; `evaluator.add(image_id,
    ...)` once per image; `evaluator.evaluate()`. The first `add` decides whether masks
    are evaluated: every `add` must then give masks, or none may. The AP is pycocotools'
    (or faster-coco-eval's, the same numbers) on the ground truth with `params.imgIds =
    image_ids`; `results()` are the COCO results it scores (what `write_results` writes).
    """

    def __init__(
        self,
        ground_truth: dict,
        image_ids=None,
        index: COCO | None = None,
        scorer: str = "pycocotools",
    ):
        """`ground_truth`: a COCO-format dict (`ground_truth_to_coco`, `load_coco_json` or a
        dataset's own instances JSON); `image_ids`: the evaluated images (default: all);
        `index`: its `coco_index` for `scorer`, built once and shared by the evaluations of
        a split (default: built here); `scorer`: the library that scores (`SCORERS`)."""
        missing = {"images", "annotations", "categories"} - set(ground_truth)
        if missing:
            raise ValueError(f"ground_truth lacks the COCO field(s) {sorted(missing)}")
        if not ground_truth["images"]:
            raise ValueError("ground_truth must hold at least one image")
        self._scorer = scorer
        self._evaluation_class = _scorer(scorer)[1]
        self._ground_truth = coco_index(ground_truth, scorer) if index is None else index
        self._image_sizes = {image["id"]: (image.get("height"), image.get("width"))
                             for image in ground_truth["images"]}
        known = sorted(self._image_sizes)
        self.image_ids = known if image_ids is None else sorted(int(i) for i in image_ids)
        unknown = sorted(set(self.image_ids) - set(known))
        if unknown:
            raise ValueError(f"image_ids {unknown[:5]} are not images of the ground truth")
        self._category_ids = {category["id"] for category in ground_truth["categories"]}
        self._results: list[dict] = []
        self._added: set[int] = set()
        self._with_masks: bool | None = None

    def add(self, image_id, boxes, scores, classes, masks=None, valid=None, *, rles=None) -> None:
        """Records one image's detections; arguments as in `detections_to_coco`.

        Masks must have the image's size `[D, H, W]`. Each image is added at most once.
        """
        if image_id not in self.image_ids:
            raise ValueError(f"image_id {image_id!r} is not an evaluated image of the ground truth")
        if image_id in self._added:
            raise ValueError(f"image_id {image_id} was already added")
        with_masks = masks is not None or rles is not None
        if self._with_masks is not None and with_masks != self._with_masks:
            raise ValueError(
                "masks must be given for every image or for none; earlier images were added "
                + ("with" if self._with_masks else "without") + " masks")
        results = detections_to_coco(image_id, boxes, scores, classes, masks, valid, rles=rles)
        if masks is not None and np.shape(masks)[1:] != self._image_sizes[image_id]:
            raise ValueError(
                f"masks must have the image's size {self._image_sizes[image_id]}, got "
                f"{np.shape(masks)[1:]}")
        unknown = {result["category_id"] for result in results} - self._category_ids
        if unknown:
            raise ValueError(f"classes {sorted(unknown)} are not categories of the ground truth")
        self._results += results
        self._added.add(image_id)
        self._with_masks = with_masks

    def results(self) -> list[dict]:
        """The COCO results added so far (box and, with masks, segmentation in one dict),
        by image id (each image's in the order given)."""
        return sorted(self._results, key=lambda result: result["image_id"])

    def collected(self) -> tuple[list[int], list[dict], bool | None]:
        """What was added so far: the image ids, their COCO results and whether they came
        with masks (None: no image added). `merge` of another evaluator takes it."""
        return sorted(self._added), list(self._results), self._with_masks

    def merge(self, collected: tuple[list[int], list[dict], bool | None]) -> None:
        """Adds the images another evaluator of the same ground truth collected
        (`collected()`, e.g. another process's share of a split); the scores are as if
        they had been added here. An image added to both, or masks given by one and not
        the other, is an error."""
        image_ids, results, with_masks = collected
        twice = self._added.intersection(image_ids)
        if twice:
            raise ValueError(f"image_ids {sorted(twice)[:5]} were added to both evaluators")
        if None not in (with_masks, self._with_masks) and with_masks != self._with_masks:
            raise ValueError("masks must be given for every image or for none; one evaluator "
                             "had masks and the other not")
        self._results += results
        self._added.update(image_ids)
        if with_masks is not None:
            self._with_masks = with_masks

    def _results_index(self, results: list[dict]) -> COCO:
        if not results:
            dataset = self._ground_truth.dataset
            return coco_index({"images": dataset["images"], "categories": dataset["categories"],
                               "annotations": []}, self._scorer)
        with _silenced_stdout():
            return self._ground_truth.loadRes(results)

    def _stats(self, iou_type: str, results: list[dict]) -> np.ndarray:
        evaluation = self._evaluation_class(self._ground_truth, self._results_index(results), iou_type)
        evaluation.params.imgIds = self.image_ids
        with _silenced_stdout():
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return evaluation.stats

    def evaluate(self) -> dict[str, float]:
        """COCO AP of the detections added so far.

        Boxes are scored from the results without their "segmentation", masks from the
        results without their "bbox" (detectron2's protocol).

        Returns:
          box_ap, box_ap50, box_ap75, box_ap_small, box_ap_medium, box_ap_large, and with
          masks the same six mask_ap* keys: Python floats in [0, 1], NaN where undefined
          (no ground-truth object in that population; see the module docstring).
        """
        runs = [("box", "bbox", "segmentation")]
        if self._with_masks:
            runs.append(("mask", "segm", "bbox"))
        metrics = {}
        for prefix, iou_type, dropped in runs:
            results = [{k: v for k, v in r.items() if k != dropped} for r in self.results()]
            stats = self._stats(iou_type, results)
            for suffix, value in zip(_STAT_SUFFIXES, stats):
                metrics[f"{prefix}_ap{suffix}"] = float("nan") if value == _UNDEFINED_STAT else float(value)
        return metrics
