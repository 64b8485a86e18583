"""Host memory and time of instance evaluation in the dataset's frame, at 1024 x 1024.

The host half of an instance evaluation: per image, `frames.to_results` maps 100
detections from the model's canvas into the image's frame (boxes scaled, each 28x28 mask
pasted at the image's size, binarized and RLE-encoded at once) and `COCOEvaluator.add`
keeps them; then pycocotools scores boxes and masks. The detections are synthetic (random
boxes around 20 ground-truth objects per image, mask probabilities uniform in [0.3, 1]), so the model
is not run; what is measured is what the evaluation itself holds. Before, the eval step
returned `[B, 100, H, W]` boolean masks; a split's worth at 1024² would be
images x 100 x 1024² bytes (52 GB for 500 images) if kept.

Run: python -m benchmarks.eval_memory [--images=500] [--size=1024] [--json]
Prints one table (peak resident memory of the process, MiB; seconds per stage).
"""

import argparse
import json
import resource
import time

import numpy as np

from jaxseg.data import geometry
from jaxseg.evaluation import frames
from jaxseg.evaluation.coco import COCOEvaluator, ground_truth_to_coco

DETECTIONS = 100
OBJECTS = 20
MASK = 28
# Object corners are drawn at least this far from the image's right and bottom edges.
MIN_SIZE = 64
CLASS_NAMES = ("background", "a", "b", "c")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _objects(rng, size: int) -> np.ndarray:
    """float32 [OBJECTS, 4] integer boxes inside a size x size image."""
    corners = rng.integers(0, size - MIN_SIZE, (OBJECTS, 2))
    extents = rng.integers(16, 256, (OBJECTS, 2))
    return np.concatenate([corners, np.minimum(corners + extents, size)], 1).astype(np.float32)


def _examples(boxes_per_image, size: int):
    """Ground-truth examples, one at a time: rectangle masks at the boxes."""
    for boxes in boxes_per_image:
        masks = np.zeros((len(boxes), size, size), np.uint8)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int)):
            mask[y0:y1, x0:x1] = 1
        yield {"masks": masks, "boxes": boxes, "labels": np.arange(len(boxes)) % 3 + 1}


def _detections(rng, boxes: np.ndarray, size: int) -> dict:
    """One image's `detect(..., paste=False)` outputs: jittered copies of its objects."""
    picks = rng.integers(0, len(boxes), DETECTIONS)
    jittered = np.clip(boxes[picks] + rng.normal(0, 8, (DETECTIONS, 4)), 0, size)
    jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
    return {
        "boxes": jittered.astype(np.float32),
        "scores": rng.uniform(0, 1, DETECTIONS).astype(np.float32),
        "classes": (picks % 3 + 1).astype(np.int32),
        "mask_probabilities": rng.uniform(0.3, 1, (DETECTIONS, MASK, MASK)).astype(np.float32),
        "valid": np.ones(DETECTIONS, bool),
    }


def run(images: int, size: int) -> dict:
    rng = np.random.default_rng(0)
    start_mib = _peak_mib()
    boxes = [_objects(rng, size) for _ in range(images)]
    clock = time.perf_counter()
    ground_truth = ground_truth_to_coco(_examples(boxes, size), CLASS_NAMES)
    frame = frames.InstanceFrame(
        ground_truth=ground_truth,
        image_ids=tuple(range(images)),
        category_ids=tuple(range(len(CLASS_NAMES))),
        placements=(geometry.placement((size, size), geometry.Fit(size)),) * images,
    )
    ground_truth_seconds = time.perf_counter() - clock
    evaluator = COCOEvaluator(frame.ground_truth, frame.image_ids)
    clock = time.perf_counter()
    for index in range(images):
        found = frames.to_results(frame, index, _detections(rng, boxes[index], size), 0.5)
        evaluator.add(found.image_id, found.boxes, found.scores, found.category_ids,
                      rles=found.rles)
    mapping_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    metrics = evaluator.evaluate()
    scoring_seconds = time.perf_counter() - clock
    return {
        "images": images,
        "size": size,
        "detections_per_image": DETECTIONS,
        "peak_rss_mib": _peak_mib(),
        "peak_rss_increase_mib": _peak_mib() - start_mib,
        "ground_truth_seconds": ground_truth_seconds,
        "paste_and_encode_seconds": mapping_seconds,
        "pycocotools_seconds": scoring_seconds,
        "box_ap": metrics["box_ap"],
        "mask_ap": metrics["mask_ap"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--json", action="store_true", help="End with one JSON line.")
    args = parser.parse_args(argv)
    if args.images < 1 or args.size <= MIN_SIZE:
        parser.error(f"--images must be at least 1 and --size above {MIN_SIZE}")
    result = run(args.images, args.size)
    print(f"{'quantity':<28} {'value':>12}")
    for name, value in result.items():
        print(f"{name:<28} {value:>12.4g}" if isinstance(value, float) else f"{name:<28} {value:>12}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
