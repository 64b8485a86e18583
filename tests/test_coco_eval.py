"""COCO evaluation (jaxseg.evaluation): conversions, hand-computed APs and a numpy reference."""
import functools
import json
import math
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jaxseg.data import pipeline, shapes
from jaxseg.evaluation import (COCOEvaluator, detections_to_coco, encode_masks,
                               ground_truth_to_coco, load_coco_json, write_coco_json)
from jaxseg.evaluation.coco import encode_region
from jaxseg.evaluation import coco

CLASS_NAMES = ("background", "circle", "rectangle", "triangle")
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
AP_SUFFIXES = ("", "50", "75", "_small", "_medium", "_large")
# pycocotools computes precision as tp / (tp + fp + 2.2e-16), so a perfect AP is 1 - 2e-16.
EPSILON = 1e-12


@pytest.fixture(autouse=True, params=sorted(coco.SCORERS))
def scorer(request, monkeypatch):
    """Every test runs with each scorer: faster-coco-eval must give the numbers pycocotools
    gives, the hand-computed and numpy-reference ones included."""
    monkeypatch.setattr(
        sys.modules[__name__], "COCOEvaluator",
        functools.partial(coco.COCOEvaluator, scorer=request.param),
    )
    return request.param


def box_masks(boxes, height, width):
    """`[n, H, W]` uint8 masks filling integer (x1, y1, x2, y2) boxes."""
    masks = np.zeros((len(boxes), height, width), np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes, int)):
        mask[y1:y2, x1:x2] = 1
    return masks


def box_example(boxes, labels, size=64, **extra):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {"masks": box_masks(boxes, size, size), "boxes": boxes,
            "labels": np.asarray(labels, np.int32), **extra}


def perfect_add(evaluator, image_id, example, with_masks=True):
    """Adds an example's ground truth as its detections, all with score 1."""
    count = len(example["labels"])
    evaluator.add(image_id, example["boxes"], np.ones(count), example["labels"],
                  example["masks"] if with_masks else None)


def evaluate(examples, detections, with_masks=True):
    """AP metrics of `detections` (image_id -> (boxes, scores, classes, masks)) on `examples`."""
    evaluator = COCOEvaluator(ground_truth_to_coco(examples, CLASS_NAMES))
    for image_id, (boxes, scores, classes, masks) in detections.items():
        evaluator.add(image_id, boxes, scores, classes, masks if with_masks else None)
    return evaluator.evaluate()


# ------------------------------------------------------------------ reference AP (numpy)


def reference_box_iou(a, b):
    """IoU of two (x1, y1, x2, y2) boxes with continuous areas."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union


def reference_mask_iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def reference_ap(ground_truths, detections, threshold, iou):
    """COCO AP of one category at one IoU threshold, written from the definition.

    Detections, taken by decreasing score, each match the unmatched ground truth of their
    image with the highest IoU if that IoU is at least `threshold`. The interpolated
    precision at recall r is the best precision at any recall >= r (0 if none); AP is its
    mean over the 101 recalls 0, 0.01, ..., 1.

    Args:
      ground_truths: image -> list of objects.
      detections: list of (image, score, object), distinct scores.
      iou: function of (detection object, ground-truth object).
    """
    matched = {image: set() for image in ground_truths}
    true_positives = []
    for image, _, detected in sorted(detections, key=lambda d: -d[1]):
        candidates = [(iou(detected, truth), k) for k, truth in enumerate(ground_truths[image])
                      if k not in matched[image]]
        best_iou, best = max(candidates, default=(-1.0, None))
        hit = best is not None and best_iou >= threshold
        if hit:
            matched[image].add(best)
        true_positives.append(hit)
    num_truths = sum(len(objects) for objects in ground_truths.values())
    hits = np.cumsum(true_positives)
    recall = hits / num_truths
    precision = hits / np.arange(1, len(hits) + 1)
    interpolated = [max(precision[recall >= r], default=0.0) for r in RECALL_POINTS]
    return float(np.mean(interpolated))


# ------------------------------------------------------------------ conversions


def test_encode_masks_round_trips_and_is_json():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 7, 9)) < 0.4
    rles = encode_masks(masks)
    assert len(rles) == 3
    json.dumps(rles)
    for rle, mask in zip(rles, masks):
        assert rle["size"] == [7, 9] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(rle), mask)
    np.testing.assert_array_equal(mask_utils.decode(encode_masks(masks.astype(np.uint8))[1]), masks[1])
    assert encode_masks(np.zeros((0, 4, 5), np.uint8)) == []


@pytest.mark.parametrize("masks, message", [
    (np.zeros((4, 5), np.uint8), r"\[n, H, W\]"),
    (np.full((1, 4, 5), 2, np.uint8), "0 and 1"),
    (np.zeros((1, 4, 5), np.float32), "dtype"),
])
def test_encode_masks_bad_input(masks, message):
    with pytest.raises(ValueError, match=message):
        encode_masks(masks)


def test_encode_region_is_pycocotools_encode_of_the_whole_mask():
    """Random regions anywhere in random images (full columns, so runs join across columns;
    empty regions; regions touching the last pixel): the same RLE as pycocotools' encode
    of the whole mask, byte for byte."""
    rng = np.random.default_rng(3)
    for trial in range(600):
        height, width = (int(n) for n in rng.integers(1, 30, 2))
        rows, columns = int(rng.integers(0, height + 1)), int(rng.integers(0, width + 1))
        top, left = int(rng.integers(0, height - rows + 1)), int(rng.integers(0, width - columns + 1))
        region = rng.random((rows, columns)) < rng.uniform(0, 1)
        if trial % 4 == 0:
            region[:] = True
        whole = np.zeros((1, height, width), bool)
        whole[0, top:top + rows, left:left + columns] = region
        assert encode_region(region, top, left, height, width) == encode_masks(whole)[0]
    with pytest.raises(ValueError, match=r"a 3 x 2 region at \(1, 0\) is not inside 3 x 5"):
        encode_region(np.ones((3, 2), bool), 1, 0, 3, 5)


def test_ground_truth_fields_by_hand(tmp_path):
    triangle = np.tril(np.ones((4, 6), np.uint8), k=1)  # 4 rows, 6 columns, 14 pixels
    masks = np.zeros((2, 10, 12), np.uint8)
    masks[0, 3:7, 2:8] = triangle
    masks[1, 0:2, 9:12] = 1
    first = {"masks": masks, "boxes": np.array([[2, 3, 7, 7], [9, 0, 12, 2]], np.float32),
             "labels": np.array([3, 1], np.int32), "image_id": 7}
    empty = {"masks": np.zeros((0, 10, 12), np.uint8), "boxes": np.zeros((0, 4), np.float32),
             "labels": np.zeros((0,), np.int32), "image_id": 0}
    gt = ground_truth_to_coco([first, empty], CLASS_NAMES)
    assert gt["images"] == [{"id": 7, "height": 10, "width": 12}, {"id": 0, "height": 10, "width": 12}]
    assert gt["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "rectangle"},
                                {"id": 3, "name": "triangle"}]
    annotations = gt["annotations"]
    assert [a["id"] for a in annotations] == [1, 2]
    assert [a["image_id"] for a in annotations] == [7, 7]
    assert [a["category_id"] for a in annotations] == [3, 1]
    assert [a["bbox"] for a in annotations] == [[2.0, 3.0, 5.0, 4.0], [9.0, 0.0, 3.0, 2.0]]
    assert [a["area"] for a in annotations] == [14, 6]  # mask pixels, not box w·h (20, 6)
    assert [a["iscrowd"] for a in annotations] == [0, 0]
    for annotation, mask in zip(annotations, masks):
        np.testing.assert_array_equal(mask_utils.decode(annotation["segmentation"]), mask)
    path = tmp_path / "cache" / "gt.json"
    write_coco_json(path, gt)
    assert load_coco_json(path) == gt
    assert [p.name for p in path.parent.iterdir()] == ["gt.json"]  # no temporary left


def test_ground_truth_ids_default_to_positions():
    examples = [box_example([[0, 0, 4, 4]], [1], size=8), box_example([], [], size=8)]
    gt = ground_truth_to_coco(iter(examples), CLASS_NAMES)
    assert [image["id"] for image in gt["images"]] == [0, 1]
    assert len(gt["annotations"]) == 1


@pytest.mark.parametrize("change, message", [
    (dict(labels=np.array([0], np.int32)), r"labels'\] must lie in \[1, 4\)"),
    (dict(labels=np.array([4], np.int32)), r"must lie in \[1, 4\)"),
    (dict(labels=np.array([1.0])), "integer dtype"),
    (dict(labels=np.array([1, 2], np.int32)), r"labels'\] must have shape \[1\]"),
    (dict(boxes=np.zeros((1, 3), np.float32)), r"boxes'\] must have shape \[n, 4\]"),
    (dict(boxes=np.zeros((2, 4), np.float32)), "2 rows but masks has 1"),
    (dict(boxes=np.array([[4, 0, 2, 4]], np.float32)), "x2 >= x1"),
    (dict(boxes=np.array([[0, 0, np.nan, 4]], np.float32)), "finite"),
    (dict(masks=np.zeros((8, 8), np.uint8)), r"masks'\] must have shape \[n, H, W\]"),
    (dict(image_id=-1), "image_id"),
])
def test_ground_truth_bad_example(change, message):
    example = box_example([[0, 0, 4, 4]], [1], size=8) | change
    with pytest.raises(ValueError, match=message):
        ground_truth_to_coco([example], CLASS_NAMES)


def test_ground_truth_bad_collection():
    example = box_example([[0, 0, 4, 4]], [1], size=8, image_id=3)
    with pytest.raises(ValueError, match="used twice"):
        ground_truth_to_coco([example, example], CLASS_NAMES)
    with pytest.raises(ValueError, match="at least one example"):
        ground_truth_to_coco([], CLASS_NAMES)
    with pytest.raises(ValueError, match="class_names"):
        ground_truth_to_coco([example], ["background"])


def test_detections_to_coco_converts_and_drops_invalid():
    boxes = np.array([[1.5, 2, 4, 7], [np.nan, 0, 0, 0], [0, 0, 3, 3]], np.float32)
    masks = np.zeros((3, 8, 6), bool)
    masks[0, 2:7, 1:4] = True
    masks[2, :3, :3] = True
    results = detections_to_coco(5, boxes, np.array([0.9, np.nan, 0.25]), np.array([2, 0, 1]),
                                 masks, valid=np.array([True, False, True]))
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    assert boxes_only == [
        {"image_id": 5, "category_id": 2, "score": pytest.approx(0.9), "bbox": [1.5, 2.0, 2.5, 5.0]},
        {"image_id": 5, "category_id": 1, "score": 0.25, "bbox": [0.0, 0.0, 3.0, 3.0]},
    ]
    np.testing.assert_array_equal(mask_utils.decode(results[0]["segmentation"]), masks[0])
    np.testing.assert_array_equal(mask_utils.decode(results[1]["segmentation"]), masks[2])
    json.dumps(results)
    no_masks = detections_to_coco(5, boxes[[0, 2]], np.array([0.9, 0.25]), np.array([2, 1]))
    assert no_masks == boxes_only
    encoded = detections_to_coco(5, boxes[[0, 2]], np.array([0.9, 0.25]), np.array([2, 1]),
                                 rles=encode_masks(masks[[0, 2]]))
    assert encoded == results
    with pytest.raises(ValueError, match="one RLE per valid detection"):
        detections_to_coco(5, boxes[[0, 2]], np.array([0.9, 0.25]), np.array([2, 1]),
                           rles=encode_masks(masks[:1]))


def test_detections_to_coco_empty_cases():
    assert detections_to_coco(0, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int),
                              np.zeros((0, 8, 8), bool)) == []
    assert detections_to_coco(0, np.ones((2, 4)), np.ones(2), np.ones(2, int),
                              np.ones((2, 8, 8), bool), valid=np.zeros(2, bool)) == []


@pytest.mark.parametrize("change, message", [
    (dict(image_id=1.0), "image_id"),
    (dict(boxes=np.zeros((2, 5))), r"boxes must have shape \[n, 4\]"),
    (dict(scores=np.ones(3)), r"scores must have shape \[2\]"),
    (dict(scores=np.array([0.5, np.inf])), "scores .* finite"),
    (dict(classes=np.array([1.0, 2.0])), "classes must have an integer dtype"),
    (dict(classes=np.array([1, 0])), "category ids >= 1"),
    (dict(valid=np.array([1, 1])), "valid must be bool"),
    (dict(masks=np.zeros((3, 8, 8), bool)), r"masks must have shape \[2, H, W\]"),
    (dict(boxes=np.array([[0, 0, 4, 4], [3, 3, 2, 5]], float)), "x2 >= x1"),
])
def test_detections_to_coco_bad_input(change, message):
    arguments = dict(image_id=0, boxes=np.array([[0, 0, 4, 4], [1, 1, 3, 5]], float),
                     scores=np.array([0.5, 0.6]), classes=np.array([1, 2]),
                     masks=np.zeros((2, 8, 8), bool)) | change
    with pytest.raises(ValueError, match=message):
        detections_to_coco(**arguments)


# ------------------------------------------------------------------ AP values


def test_perfect_detections_give_ap_one(capsys):
    size = 128
    examples = [
        box_example([[0, 0, 10, 10], [20, 20, 60, 60], [10, 10, 120, 120]], [1, 2, 3], size),
        box_example([], [], size),
        box_example([[5, 70, 30, 100], [40, 40, 46, 52]], [3, 3], size),
    ]
    evaluator = COCOEvaluator(ground_truth_to_coco(examples, CLASS_NAMES))
    for image_id, example in enumerate(examples):
        perfect_add(evaluator, image_id, example)
    metrics = evaluator.evaluate()
    assert metrics == {f"{kind}_ap{suffix}": pytest.approx(1.0, abs=EPSILON)
                       for kind in ("box", "mask") for suffix in AP_SUFFIXES}
    assert evaluator.evaluate() == metrics  # evaluating leaves the detections unchanged
    assert capsys.readouterr().out == ""  # pycocotools' printing is swallowed


def hand_case(false_positive_score):
    """One image, two ground-truth boxes; one exact detection and one false positive."""
    example = box_example([[10, 10, 30, 30], [40, 5, 60, 25]], [1, 1])
    boxes = np.array([[10, 10, 30, 30], [5, 40, 25, 60]], np.float32)  # the second hits nothing
    detections = {0: (boxes, np.array([0.9, false_positive_score]), np.array([1, 1]),
                      box_masks(boxes, 64, 64))}
    return [example], detections


@pytest.mark.parametrize("false_positive_score, expected", [
    # Ranked TP, FP: precision 1 up to recall 1/2, nothing beyond: 51 of 101 points at 1.
    (0.8, 51 / 101),
    # Ranked FP, TP: best precision at recall <= 1/2 is 1/2: 51 points at 0.5.
    (0.95, 51 * 0.5 / 101),
])
def test_hand_computed_ap(false_positive_score, expected):
    examples, detections = hand_case(false_positive_score)
    metrics = evaluate(examples, detections)
    for kind in ("box", "mask"):
        for suffix in ("", "50", "75", "_small"):  # exact match: the same at every IoU
            assert metrics[f"{kind}_ap{suffix}"] == pytest.approx(expected, abs=EPSILON)
        assert math.isnan(metrics[f"{kind}_ap_medium"]) and math.isnan(metrics[f"{kind}_ap_large"])
    ground_truths = {0: list(examples[0]["boxes"])}
    boxes, scores, _, _ = detections[0]
    reference = reference_ap(ground_truths, [(0, s, b) for s, b in zip(scores, boxes)], 0.5,
                             reference_box_iou)
    assert reference == pytest.approx(expected, abs=EPSILON)


def test_shifted_detection_counts_for_ap50_not_ap75():
    example = box_example([[20, 20, 30, 30]], [2])
    shifted = np.array([[22, 20, 32, 30]], np.float32)  # IoU = 80 / 120 = 2/3
    assert reference_box_iou(example["boxes"][0], shifted[0]) == pytest.approx(2 / 3)
    metrics = evaluate([example], {0: (shifted, np.array([0.7]), np.array([2]),
                                       box_masks(shifted, 64, 64))})
    for kind in ("box", "mask"):
        assert metrics[f"{kind}_ap50"] == pytest.approx(1.0, abs=EPSILON)
        assert metrics[f"{kind}_ap75"] == 0.0
        # Matched at IoU thresholds 0.5, 0.55, 0.6 and 0.65 of the ten: AP 4/10.
        assert metrics[f"{kind}_ap"] == pytest.approx(0.4, abs=EPSILON)


def random_case(seed, num_images=3, size=48):
    """Random ground-truth boxes and noisy detections of one category, distinct scores."""
    rng = np.random.default_rng(seed)
    examples, detections, scores = [], {}, rng.permutation(200)[:100] / 200 + 0.001
    used = 0
    for image in range(num_images):
        count = int(rng.integers(1, 5))
        corners = rng.integers(0, size - 12, (count, 2))
        sides = rng.integers(4, 12, (count, 2))
        boxes = np.concatenate([corners, corners + sides], axis=1)
        examples.append(box_example(boxes, np.ones(count, np.int32), size))
        noisy = boxes + rng.integers(-2, 3, boxes.shape)
        extra_corners = rng.integers(0, size - 10, (2, 2))
        candidates = np.concatenate([noisy, np.concatenate([extra_corners, extra_corners + 8], 1)])
        candidates = np.clip(candidates, 0, size)
        candidates[:, 2:] = np.maximum(candidates[:, 2:], candidates[:, :2] + 1)
        kept = candidates[rng.random(len(candidates)) < 0.8]
        detections[image] = (kept.astype(np.float32), scores[used:used + len(kept)],
                             np.ones(len(kept), np.int32), box_masks(kept, size, size))
        used += len(kept)
    return examples, detections


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_case_matches_numpy_reference(seed):
    examples, detections = random_case(seed)
    metrics = evaluate(examples, detections)
    for kind, iou, truth_key, detection_index in (("box", reference_box_iou, "boxes", 0),
                                                  ("mask", reference_mask_iou, "masks", 3)):
        ground_truths = {i: list(example[truth_key]) for i, example in enumerate(examples)}
        flat = [(image, score, obj) for image, detection in detections.items()
                for score, obj in zip(detection[1], detection[detection_index])]
        per_threshold = [reference_ap(ground_truths, flat, t, iou) for t in COCO_IOU_THRESHOLDS]
        assert metrics[f"{kind}_ap50"] == pytest.approx(per_threshold[0], abs=EPSILON)
        assert metrics[f"{kind}_ap75"] == pytest.approx(per_threshold[5], abs=EPSILON)
        assert metrics[f"{kind}_ap"] == pytest.approx(np.mean(per_threshold), abs=EPSILON)
        assert 0.0 < metrics[f"{kind}_ap"] < 1.0


def test_evaluators_of_two_shares_merged_score_exactly_as_one():
    """What two processes collected, merged on one (`collected`, `merge`): the same results
    and all twelve numbers of one evaluator given every image, and the same as the numpy
    reference."""
    examples, detections = random_case(4, num_images=6)
    ground_truth = ground_truth_to_coco(examples, CLASS_NAMES)
    whole, first, second = (COCOEvaluator(ground_truth) for _ in range(3))
    for image_id in reversed(sorted(detections)):  # results come back in image-id order
        whole.add(image_id, *detections[image_id])
        (first if image_id % 3 else second).add(image_id, *detections[image_id])
    first.merge(second.collected())
    assert first.results() == whole.results()
    merged, expected = first.evaluate(), whole.evaluate()
    assert merged.keys() == expected.keys() and len(merged) == 12
    for name, value in expected.items():
        assert merged[name] == value or (math.isnan(merged[name]) and math.isnan(value)), name
    assert merged["box_ap50"] == pytest.approx(evaluate(examples, detections)["box_ap50"], abs=0)
    assert 0 < merged["mask_ap"] < 1
    with pytest.raises(ValueError, match=r"image_ids \[0, 3\] were added to both"):
        first.merge(second.collected())


def test_merging_an_evaluator_without_masks_into_one_with_masks_is_an_error():
    examples, detections = random_case(5, num_images=2)
    ground_truth = ground_truth_to_coco(examples, CLASS_NAMES)
    with_masks, without = COCOEvaluator(ground_truth), COCOEvaluator(ground_truth)
    with_masks.add(0, *detections[0])
    without.add(1, *detections[1][:3])
    with pytest.raises(ValueError, match="one evaluator had masks and the other not"):
        with_masks.merge(without.collected())
    empty = COCOEvaluator(ground_truth)
    with_masks.merge(empty.collected())
    assert with_masks.collected()[0] == [0]


def test_area_ranges_use_the_mask_area():
    size = 128
    triangle = np.tril(np.ones((40, 40), np.uint8))  # box 40×40 = 1600 (medium), mask 820 (small)
    masks = np.zeros((2, size, size), np.uint8)
    masks[0, 0:40, 0:40] = triangle
    masks[1, 60:100, 60:100] = 1  # 1600 pixels: medium
    example = {"masks": masks, "boxes": np.array([[0, 0, 40, 40], [60, 60, 100, 100]], np.float32),
               "labels": np.array([1, 1], np.int32)}
    gt = ground_truth_to_coco([example], CLASS_NAMES)
    assert [a["area"] for a in gt["annotations"]] == [820, 1600]
    metrics = evaluate([example], {0: (example["boxes"][:1], np.array([0.9]), np.array([1]),
                                       masks[:1])})
    for kind in ("box", "mask"):
        assert metrics[f"{kind}_ap_small"] == pytest.approx(1.0, abs=EPSILON)
        assert metrics[f"{kind}_ap_medium"] == 0.0
        assert math.isnan(metrics[f"{kind}_ap_large"])
        assert metrics[f"{kind}_ap"] == pytest.approx(51 / 101, abs=EPSILON)


def test_detection_on_an_image_without_objects_is_a_false_positive():
    examples = [box_example([[10, 10, 20, 20]], [1]), box_example([], [])]
    detections = {0: (examples[0]["boxes"], np.array([0.5]), np.array([1]), examples[0]["masks"]),
                  1: (np.array([[0, 0, 5, 5]], np.float32), np.array([0.9]), np.array([1]),
                      box_masks([[0, 0, 5, 5]], 64, 64))}
    metrics = evaluate(examples, detections)
    assert metrics["box_ap"] == metrics["mask_ap"] == pytest.approx(0.5, abs=EPSILON)


def test_images_without_detections_count_their_objects_as_missed():
    examples = [box_example([[10, 10, 20, 20]], [1]) for _ in range(3)]
    evaluator = COCOEvaluator(ground_truth_to_coco(examples, CLASS_NAMES))
    perfect_add(evaluator, 0, examples[0])
    evaluator.add(1, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, 64, 64), bool))
    # Image 2 is never added. Recall 1/3 at precision 1: recalls 0, 0.01, ..., 0.33.
    metrics = evaluator.evaluate()
    assert metrics["box_ap"] == metrics["mask_ap"] == pytest.approx(34 / 101, abs=EPSILON)


def test_no_detections_at_all_give_zero():
    examples = [box_example([[10, 10, 20, 20]], [1]), box_example([[0, 0, 50, 50]], [2])]
    gt = ground_truth_to_coco(examples, CLASS_NAMES)
    nothing_added = COCOEvaluator(gt).evaluate()
    assert set(nothing_added) == {f"box_ap{suffix}" for suffix in AP_SUFFIXES}  # boxes only
    all_invalid = COCOEvaluator(gt)
    for image_id, example in enumerate(examples):
        count = len(example["labels"])
        all_invalid.add(image_id, example["boxes"], np.ones(count), example["labels"],
                        example["masks"], valid=np.zeros(count, bool))
    for metrics, kinds in ((nothing_added, ("box",)), (all_invalid.evaluate(), ("box", "mask"))):
        for kind in kinds:
            for suffix in ("", "50", "75", "_small", "_medium"):
                assert metrics[f"{kind}_ap{suffix}"] == 0.0
            assert math.isnan(metrics[f"{kind}_ap_large"])  # no large object: undefined


def test_no_ground_truth_objects_give_nan():
    examples = [box_example([], []), box_example([], [])]
    evaluator = COCOEvaluator(ground_truth_to_coco(examples, CLASS_NAMES))
    evaluator.add(0, np.array([[0, 0, 9, 9]]), np.array([0.9]), np.array([1]))
    metrics = evaluator.evaluate()
    assert len(metrics) == 6 and all(math.isnan(value) for value in metrics.values())


def test_categories_without_ground_truth_are_left_out():
    example = box_example([[10, 10, 20, 20], [30, 30, 40, 40]], [1, 2])
    # Class 1 found, class 2 missed, class 3 (no ground truth) detected with the top score.
    boxes = np.array([[10, 10, 20, 20], [0, 40, 10, 50]], np.float32)
    metrics = evaluate([example], {0: (boxes, np.array([0.5, 0.9]), np.array([1, 3]),
                                       box_masks(boxes, 64, 64))})
    assert metrics["box_ap"] == metrics["mask_ap"] == pytest.approx(0.5, abs=EPSILON)  # mean of AP 1 (class 1) and 0 (class 2)


def test_evaluator_bad_input():
    example = box_example([[10, 10, 20, 20]], [1])
    gt = ground_truth_to_coco([example], CLASS_NAMES)
    evaluator = COCOEvaluator(gt)
    boxes, scores, classes = example["boxes"], np.ones(1), example["labels"]
    with pytest.raises(ValueError, match="image_id 1 is not an evaluated image"):
        evaluator.add(1, boxes, scores, classes)
    with pytest.raises(ValueError, match=r"classes \[4\] are not categories"):
        evaluator.add(0, boxes, scores, np.array([4]))
    with pytest.raises(ValueError, match=r"image's size \(64, 64\)"):
        evaluator.add(0, boxes, scores, classes, np.zeros((1, 32, 64), bool))
    evaluator.add(0, boxes, scores, classes)  # the failed calls recorded nothing
    with pytest.raises(ValueError, match="already added"):
        evaluator.add(0, boxes, scores, classes)

    two = COCOEvaluator(ground_truth_to_coco([example, example | {"image_id": 1}], CLASS_NAMES))
    two.add(0, boxes, scores, classes, example["masks"])
    with pytest.raises(ValueError, match="every image or for none"):
        two.add(1, boxes, scores, classes)
    with pytest.raises(ValueError, match="annotations"):
        COCOEvaluator({"images": gt["images"], "categories": gt["categories"]})
    with pytest.raises(ValueError, match="at least one image"):
        COCOEvaluator(gt | {"images": []})


# ------------------------------------------------------------------ shapes dataset


@pytest.fixture(scope="module")
def validation_source(tmp_path_factory):
    config = pipeline.default_data_config()
    config.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.image_size = 32
    config.num_train = 1
    config.num_validation = 8
    config.num_test = 1
    config.min_object_size = 0.15
    config.max_object_size = 0.6
    config.min_visible_pixels = 4
    config.empty_fraction = 0.4
    return pipeline.load_split(config, "validation")


def test_shapes_ground_truth_with_perfect_predictions(validation_source, tmp_path):
    examples = [validation_source[i] for i in range(len(validation_source))]
    path = tmp_path / "validation_gt.json"
    write_coco_json(path, ground_truth_to_coco(examples, shapes.CLASS_NAMES))
    gt = load_coco_json(path)
    assert len(gt["images"]) == 8
    assert len(gt["annotations"]) == sum(len(example["labels"]) for example in examples)
    assert any(len(example["labels"]) == 0 for example in examples)
    by_image = {}
    for annotation in gt["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    for image_id, example in enumerate(examples):
        annotations = by_image.get(image_id, [])
        np.testing.assert_array_equal([a["category_id"] for a in annotations], example["labels"])
        np.testing.assert_array_equal([a["area"] for a in annotations],
                                      example["masks"].sum(axis=(1, 2)))
        for annotation, box in zip(annotations, example["boxes"]):
            x1, y1, x2, y2 = box.tolist()
            assert annotation["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    evaluator = COCOEvaluator(gt)
    for image_id, example in enumerate(examples):
        perfect_add(evaluator, image_id, example)
    metrics = evaluator.evaluate()
    for kind in ("box", "mask"):
        for suffix in ("", "50", "75"):
            assert metrics[f"{kind}_ap{suffix}"] == pytest.approx(1.0, abs=EPSILON)
