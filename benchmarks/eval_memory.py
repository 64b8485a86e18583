"""Host memory and time of instance evaluation in the dataset's frame, at 1024 x 1024.

The host half of an instance evaluation: per image, `frames.image_results` maps 100
detections from the model's canvas into the image's frame (boxes scaled, each 28x28 mask
pasted at the image's size, binarized and RLE-encoded at once) and `COCOEvaluator.add`
keeps them; then pycocotools scores boxes and masks. The detections are synthetic (random
boxes around 20 ground-truth objects per image, mask probabilities uniform in [0.3, 1]), so the model
is not run; what is measured is what the evaluation itself holds. Before, the eval step
returned `[B, 100, H, W]` boolean masks; a split's worth at 1024² would be
images x 100 x 1024² bytes (52 GB for 500 images) if kept.

The paste and encode stage runs once per `--workers` count: 1 is the evaluation thread
itself, n > 1 is `config.eval_workers=n` worker processes (`jaxseg.evaluation.worker_pool`);
every count must give the same 12 APs (`same_metrics`). The results are also scored by
faster-coco-eval (`config.eval_scorer="faster_coco_eval"`): its seconds and its largest
difference from pycocotools' 12 numbers.

Run: python -m benchmarks.eval_memory [--images=500] [--size=1024] [--workers=1,2] [--json]
Prints one table (peak resident memory of the process, MiB; seconds per stage).
"""

import argparse
import json
import math
import resource
import time

import numpy as np

from jaxseg.data import geometry
from jaxseg.evaluation import frames, worker_pool
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


def _paste_and_encode(frame, boxes, size: int, workers: int) -> tuple[float, COCOEvaluator]:
    """Seconds of mapping every image's detections into `frame` with `workers` processes
    doing the paste and encode work (1: the evaluation thread itself), and the evaluator
    holding the results. Each image's detections come from its own seed, the same for every
    worker count; the workers are started and warm before the clock starts."""
    pool = worker_pool.process_pool(0 if workers == 1 else workers)
    work = worker_pool.OrderedWork(frames.image_results, pool, 0 if workers == 1 else workers)
    if pool is not None:
        warm_up = [pool.apply_async(frames.image_results, (
            frame.placements[0], 0, frame.category_ids,
            _detections(np.random.default_rng(0), boxes[0], size), 0.5)) for _ in range(workers)]
        for result in warm_up:
            result.get()
    evaluator = COCOEvaluator(frame.ground_truth, frame.image_ids)

    def add(found):
        for image in found:
            evaluator.add(image.image_id, image.boxes, image.scores, image.category_ids,
                          rles=image.rles)

    clock = time.perf_counter()
    for index in range(len(boxes)):
        detections = _detections(np.random.default_rng([1, index]), boxes[index], size)
        add(work.submit(frame.placements[index], frame.image_ids[index], frame.category_ids,
                        detections, 0.5))
    add(work.drain())
    seconds = time.perf_counter() - clock
    if pool is not None:
        pool.close()
        pool.join()
    return seconds, evaluator


def run(images: int, size: int, worker_counts: tuple[int, ...] = (1,)) -> dict:
    """The table's quantities; paste-and-encode seconds per image for each worker count
    (keys: the counts), `same_metrics` when every count gave the first's 12 APs exactly."""
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
    per_image, all_metrics = {}, []
    for workers in worker_counts:
        seconds, evaluator = _paste_and_encode(frame, boxes, size, workers)
        per_image[str(workers)] = seconds / images
        clock = time.perf_counter()
        all_metrics.append(evaluator.evaluate())
        scoring_seconds = time.perf_counter() - clock
    metrics = all_metrics[0]
    same = all(_same(other, metrics) for other in all_metrics[1:])
    faster = COCOEvaluator(frame.ground_truth, frame.image_ids, scorer="faster_coco_eval")
    faster.merge(evaluator.collected())
    clock = time.perf_counter()
    faster_metrics = faster.evaluate()
    faster_seconds = time.perf_counter() - clock
    return {
        "images": images,
        "size": size,
        "detections_per_image": DETECTIONS,
        "peak_rss_mib": _peak_mib(),
        "peak_rss_increase_mib": _peak_mib() - start_mib,
        "ground_truth_seconds": ground_truth_seconds,
        "paste_and_encode_seconds": per_image[str(worker_counts[0])] * images,
        "paste_encode_seconds_per_image": per_image,
        "pycocotools_seconds": scoring_seconds,
        "faster_coco_eval_seconds": faster_seconds,
        "faster_coco_eval_max_difference": max(
            abs(faster_metrics[name] - metrics[name]) for name in metrics
            if not math.isnan(metrics[name])
        ),
        "same_metrics": same,
        "box_ap": metrics["box_ap"],
        "mask_ap": metrics["mask_ap"],
    }


def _same(metrics: dict, reference: dict) -> bool:
    """Equal, NaN equal to NaN."""
    return metrics.keys() == reference.keys() and all(
        metrics[k] == reference[k] or (math.isnan(metrics[k]) and math.isnan(reference[k]))
        for k in metrics
    )


def _worker_counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(","))
    if not counts or min(counts) < 1 or len(set(counts)) < len(counts):
        raise argparse.ArgumentTypeError(f"--workers={text}: distinct positive counts, e.g. 1,2")
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--workers", type=_worker_counts, default=(1, 2),
        help="Processes doing the paste and encode work, comma-separated (1: the "
        "evaluation thread; n > 1: config.eval_workers=n).",
    )
    parser.add_argument("--json", action="store_true", help="End with one JSON line.")
    args = parser.parse_args(argv)
    if args.images < 1 or args.size <= MIN_SIZE:
        parser.error(f"--images must be at least 1 and --size above {MIN_SIZE}")
    result = run(args.images, args.size, args.workers)
    print(f"{'quantity':<36} {'value':>12}")
    for name, value in result.items():
        if isinstance(value, dict):
            for count, seconds in value.items():
                print(f"{name + ' [' + count + ' workers]':<36} {seconds:>12.4g}")
        elif isinstance(value, float):
            print(f"{name:<36} {value:>12.4g}")
        else:
            print(f"{name:<36} {value!s:>12}")
    if len(args.workers) > 1:
        first, last = (result["paste_encode_seconds_per_image"][str(n)] for n in (args.workers[0], args.workers[-1]))
        print(f"{f'ratio {args.workers[-1]} : {args.workers[0]} workers':<36} {last / first:>12.3f}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
