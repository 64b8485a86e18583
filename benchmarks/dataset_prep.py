"""Preparing a COCO-format folder at `configs/mask_rcnn_coco.py`'s geometry, and reading it.

Writes a COCO-like folder here in a temp dir: --images JPEGs (quality 90) of 640x480 and
480x640 alternately, textured (smooth colours, shapes, noise; about COCO's bytes per image),
with 3-12 polygon objects each of 80 categories with COCO's non-contiguous ids, every
tenth image with a crowd region as uncompressed RLE. Then, for `coco_folder` at
mask_rcnn_coco's geometry (1344 canvas, shorter side 800, longer at most 1333):
  preparation   `pipeline.load_split(..., "train")` building the dataset with --workers
                processes (`config.data.num_workers`), per image of the folder.
  bytes stored  the prepared dataset's files over the source files (JPEGs and JSON).
  one example   of the training stream: `batching.train_batches` at batch 1, no flips, no
                augmentation, in the calling thread, making the Mask R-CNN fields, each
                example decoded at its first read (cache_decoded=False); the median (and
                mean) over --stream_examples batches after the first.

Then a JSON of COCO train2017's size (--json_images 118,287 entries, --json_annotations
860,001 polygons of 24 points, no image files): seconds to parse and check it
(`coco_json.read_coco_json`), and to name the dataset (`coco_folder.coco_folder_config`: the
JSON's summary, parsed once per run and then kept, and a stamp of every listed file) the
first time and again.

Run: python -m benchmarks.dataset_prep [--images=1000] [--workers=2] [--stream_examples=200]
  [--json_images=118287] [--json_annotations=860001] [--json]. Prints one table; with --json
  the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from jaxseg import config_files, registry
from jaxseg.data import batching, coco_categories, coco_folder, coco_json, pipeline

SHAPES = ((480, 640), (640, 480))
CATEGORY_IDS = coco_categories.COCO_CATEGORY_IDS
JPEG_QUALITY = 90
CROWD_EVERY = 10


def _polygon(rng, height: int, width: int) -> list[float]:
    """A random star-shaped 12-gon inside an image of height x width, as COCO's [x, y, ...]."""
    centre = rng.uniform(0.15, 0.85, 2) * (width, height)
    radii = rng.uniform(0.03, 0.2, 2) * (width, height)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    scale = rng.uniform(0.6, 1.0, (12, 1))
    points = centre + scale * radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = np.clip(points, 0, (width - 1, height - 1))
    return np.round(points, 2).ravel().tolist()


def _pixels(rng, height: int, width: int, polygons) -> np.ndarray:
    """uint8 [height, width, 3]: a colour gradient, the polygons filled, noise."""
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    columns = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    background = colours[0] * rows + colours[1] * columns * (1 - rows)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for polygon in polygons:
        draw.polygon(polygon, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 10, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _crowd_counts(rng, height: int, width: int) -> list[int]:
    """Uncompressed (column-major) RLE counts of one random rectangle."""
    y0, x0 = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
    y1, x1 = y0 + int(rng.integers(20, height // 2)), x0 + int(rng.integers(20, width // 2))
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0, *counts]


def write_coco_like_folder(root: str, count: int, seed: int = 0) -> tuple[str, str, int]:
    """The folder described in the module docstring under `root`: (instances JSON path,
    images dir, bytes of the source files)."""
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(count):
        height, width = SHAPES[index % len(SHAPES)]
        polygons = [_polygon(rng, height, width) for _ in range(int(rng.integers(3, 13)))]
        name = f"{index:012d}.jpg"
        Image.fromarray(_pixels(rng, height, width, polygons)).save(
            os.path.join(images_dir, name), quality=JPEG_QUALITY
        )
        images.append({"id": 1000 + index, "file_name": name, "height": height, "width": width})
        for polygon in polygons:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 1000 + index,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "segmentation": [polygon],
                    "iscrowd": 0,
                }
            )
        if index % CROWD_EVERY == 0:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 1000 + index,
                    "category_id": CATEGORY_IDS[0],
                    "segmentation": {
                        "size": [height, width],
                        "counts": _crowd_counts(rng, height, width),
                    },
                    "iscrowd": 1,
                }
            )
    categories = [
        {"id": k, "name": name}
        for k, name in zip(CATEGORY_IDS, coco_categories.COCO_CLASS_NAMES[1:], strict=True)
    ]
    path = os.path.join(root, "instances.json")
    with open(path, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    source_bytes = os.path.getsize(path) + sum(
        os.path.getsize(os.path.join(images_dir, entry["file_name"])) for entry in images
    )
    return path, images_dir, source_bytes


def _directory_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def coco_folder_config(annotations: str, images: str, data_dir: str, workers: int):
    """configs/mask_rcnn_coco.py with its data on the folder (its geometry kept; one JSON,
    split by file-name hash)."""
    config = config_files.load_config_file(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                     "mask_rcnn_coco.py")
    )
    config.data.annotations, config.data.images = annotations, images
    config.data.validation_annotations = config.data.validation_images = None
    config.data.data_dir = data_dir
    config.data.num_workers = workers
    config.data.cache_decoded = False
    config.data.validation_fraction = 0.1
    return config


def stream_seconds_per_example(config, source, examples: int) -> tuple[float, float]:
    """(median, mean) seconds per batch of 1 over `examples` batches after the first (module
    docstring); the median is steady against the stalls of a shared machine."""
    task = registry.MODELS.get(config.model.name).task
    batches = batching.train_batches(
        source,
        1,
        config.seed,
        flip=False,
        augmentation=None,
        max_instances=config.data.max_instances,
        num_workers=0,
        fields=registry.TASKS.get(task).target.train_fields,
    )
    next(batches)
    seconds = []
    for _ in range(examples):
        start = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - start)
    batches.close()
    return float(np.median(seconds)), float(np.mean(seconds))


def measure(images: int, workers: int, stream_examples: int) -> dict:
    """The figures of the module docstring, on a folder of `images` images."""
    with tempfile.TemporaryDirectory() as root:
        annotations, images_dir, source_bytes = write_coco_like_folder(root, images)
        data_dir = os.path.join(root, "prepared")
        config = coco_folder_config(annotations, images_dir, data_dir, workers)
        start = time.perf_counter()
        source = pipeline.load_split(config.data, "train")
        prep_seconds = time.perf_counter() - start
        stored = _directory_bytes(data_dir)
        median, mean = stream_seconds_per_example(
            config, source, min(stream_examples, len(source) - 1)
        )
    return {
        "images": images,
        "workers": workers,
        "prep_seconds": prep_seconds,
        "prep_ms_per_image": 1000 * prep_seconds / images,
        "source_bytes": source_bytes,
        "stored_bytes": stored,
        "stored_over_source": stored / source_bytes,
        "stream_ms_per_example": 1000 * median,
        "stream_mean_ms_per_example": 1000 * mean,
        "canvas": config.data.image_size,
        "shorter_side": config.data.resize_shorter_side,
    }


def write_large_json(path: str, images: int, annotations: int) -> int:
    """A COCO instances JSON of `images` 640x480 entries and `annotations` 24-point polygons
    spread over them, COCO's categories; returns its bytes."""
    rng = np.random.default_rng(1)
    points = np.round(rng.uniform(0, 480, (annotations, 48)), 2)
    entries = [
        {"id": k, "file_name": f"{k:012d}.jpg", "height": 480, "width": 640}
        for k in range(images)
    ]
    objects = [
        {
            "id": k + 1,
            "image_id": k % images,
            "category_id": CATEGORY_IDS[k % len(CATEGORY_IDS)],
            "segmentation": [points[k].tolist()],
            "area": 1000.0,
            "bbox": [10.0, 10.0, 40.0, 40.0],
            "iscrowd": 0,
        }
        for k in range(annotations)
    ]
    categories = [
        {"id": k, "name": name}
        for k, name in zip(CATEGORY_IDS, coco_categories.COCO_CLASS_NAMES[1:], strict=True)
    ]
    with open(path, "w") as file:
        json.dump({"images": entries, "annotations": objects, "categories": categories}, file)
    return os.path.getsize(path)


def measure_large_json(images: int, annotations: int) -> dict:
    """Seconds to parse a COCO-size JSON and to name its dataset (module docstring)."""
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "instances_train2017.json")
        size = write_large_json(path, images, annotations)
        os.makedirs(os.path.join(root, "train2017"))
        start = time.perf_counter()
        coco_json.read_coco_json(path)
        parse = time.perf_counter() - start
        names = []
        for _ in range(2):
            start = time.perf_counter()
            coco_folder.coco_folder_config(
                annotations=path, images=os.path.join(root, "train2017"), image_size=1344
            )
            names.append(time.perf_counter() - start)
    return {
        "json_images": images,
        "json_annotations": annotations,
        "json_megabytes": size / 1e6,
        "json_parse_seconds": parse,
        "json_name_first_seconds": names[0],
        "json_name_again_seconds": names[1],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the folder")
    parser.add_argument("--workers", type=int, default=2, help="preparation processes")
    parser.add_argument("--stream_examples", type=int, default=200, help="examples timed")
    parser.add_argument("--json_images", type=int, default=118287, help="large JSON's images")
    parser.add_argument(
        "--json_annotations", type=int, default=860001, help="large JSON's annotations"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if args.images < 4:
        parser.error("--images must be at least 4 (a train and a validation split)")
    if args.stream_examples < 1:
        parser.error("--stream_examples must be at least 1")
    if args.json_images < 1 or args.json_annotations < 0:
        parser.error("--json_images must be at least 1 and --json_annotations at least 0")
    result = measure(args.images, args.workers, args.stream_examples)
    result.update(measure_large_json(args.json_images, args.json_annotations))
    print("| quantity | value |\n|---|---|")
    print(f"| images (640x480, 480x640 JPEGs) | {result['images']} |")
    print(f"| preparation, {args.workers} workers | {result['prep_ms_per_image']:.1f} ms/image |")
    print(f"| source files | {result['source_bytes'] / 1e6:.1f} MB |")
    print(f"| stored | {result['stored_bytes'] / 1e6:.1f} MB "
          f"({result['stored_over_source']:.2f}x the source) |")
    print(f"| one example of the training stream, median (mean) | "
          f"{result['stream_ms_per_example']:.1f} ms ({result['stream_mean_ms_per_example']:.1f}) |")
    print(f"| JSON of {result['json_images']:,} images, {result['json_annotations']:,} polygons "
          f"({result['json_megabytes']:.0f} MB): parse and check | "
          f"{result['json_parse_seconds']:.1f} s |")
    first, again = result["json_name_first_seconds"], result["json_name_again_seconds"]
    print(f"| its dataset's name (summary + a stamp per file), first / again | "
          f"{first:.1f} s / {again:.2f} s |")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
