"""Images/s of the input pipeline alone, and whether it keeps up with the U-Net train step.

Times `batching.train_batches` (one thread, as `prefetching.prefetch` runs it) on the datasets
of the shipped configs at their image sizes, without and with augmentation (scale jitter
(0.8, 1.25), colour jitter 0.2, as the real-data configs set them; flips in both):
  shapes       configs/unet_shapes.py (128, batch 8) and configs/mask_rcnn_shapes.py (128,
               batch 4, 8 instance slots); decoded examples cached, as those configs do
               (timed after one pass has filled the cache).
  coco_folder  configs/mask_rcnn_folder.py (512, 32 instance slots): a COCO-format JSON and
               PNGs of 375x500 to 640x480 pixels written here in a temp dir; PNGs and RLE masks
               decoded at every read (cache_decoded=False, as shipped).
  mock COCO    configs/mask_rcnn_coco.py (1024, 100 instance slots): small random COCO
               panoptic examples served through TFDS's mock data as in
               tests/test_catalog_data.py; converted (resize to 1024, masks) at every read, but
               with no JPEG/PNG decoding, which real COCO adds (a few ms per image).
Batches are smaller than the configs' where those would take gigabytes (noted in the table).
Then the real jitted U-Net train step (`train.CompiledSteps` on configs/unet_shapes.py, all
local devices) on one fixed batch, fed synchronously (`training.feed.sharded_train_batches`), and
fed by `train.device_batches` (the training loop's feed: the same batches assembled and
copied to the devices in a background thread), each with augmentation on.

Usage: python benchmarks/input_pipeline.py [--seconds=2] [--skip_mock_coco]
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a clone

from jaxseg import config_files, sharding, train  # noqa: E402
from jaxseg.data import augment, batching, catalog, pipeline  # noqa: E402
from jaxseg.training.feed import sharded_train_batches  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
AUGMENTED = augment.augmentation(scale_jitter=(0.8, 1.25), color_jitter=0.2)
FOLDER_SHAPES = ((480, 640), (640, 480), (375, 500), (512, 512))
FOLDER_IMAGES = 40


def load_config(name: str):
    return config_files.load_config_file(str(REPO / "configs" / name))


def images_per_second(source, batch_size, max_instances, augmentation, seconds) -> float:
    """Images/s of `train_batches` over at least `seconds` (and 2 batches) after one batch."""
    batches = batching.train_batches(
        source, batch_size, 0, augmentation=augmentation, max_instances=max_instances
    )
    next(batches)
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        next(batches)
        count += 1
    return count * batch_size / (time.perf_counter() - start)


def fill_cache(source) -> None:
    for index in range(len(source)):
        source[index]


def shapes_source(config, root: str):
    """The train split of `config`'s shapes data, 64 examples built under `root`, cached."""
    config.data.data_dir = root
    config.data.num_train = 64
    config.data.num_validation = 8
    config.data.num_test = 8
    source = pipeline.load_split(config.data, "train")
    fill_cache(source)
    return source


def _polygon(rng, height: int, width: int) -> list[float]:
    """A random convex 8-gon inside an image of height x width, as COCO's [x, y, ...]."""
    centre = rng.uniform(0.2, 0.8, 2) * (width, height)
    radii = rng.uniform(0.05, 0.25, 2) * (width, height)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
    points = centre + radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.round(points, 1).ravel().tolist()


def write_coco_folder(root: str) -> tuple[str, str, tuple[str, ...]]:
    """FOLDER_IMAGES PNGs (smooth colours plus noise) and a COCO-format JSON with 2-6
    polygon instances of 3 categories per image; returns (json path, images dir, names)."""
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for index in range(FOLDER_IMAGES):
        height, width = FOLDER_SHAPES[index % len(FOLDER_SHAPES)]
        rows = np.linspace(0, 1, height)[:, None, None]
        columns = np.linspace(0, 1, width)[None, :, None]
        colours = rng.uniform(0, 255, (2, 3))
        pixels = colours[0] * rows + colours[1] * columns * (1 - rows)
        pixels = pixels + rng.normal(0, 12, (height, width, 3))
        name = f"{index:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(images_dir, name)
        )
        images.append({"id": index, "file_name": name, "height": height, "width": width})
        for _ in range(int(rng.integers(2, 7))):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(rng.integers(1, 4)),
                    "segmentation": [_polygon(rng, height, width)],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k, "name": name} for k, name in enumerate(("a", "b", "c"), 1)]
    path = os.path.join(root, "instances.json")
    with open(path, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    return path, images_dir, ("background", "a", "b", "c")


def folder_source(root: str):
    config = load_config("mask_rcnn_folder.py")
    annotations, images, names = write_coco_folder(os.path.join(root, "coco_folder"))
    config.data.annotations, config.data.images = annotations, images
    config.data.num_classes, config.data.class_names = len(names), names
    config.data.data_dir = os.path.join(root, "tfds")
    return config, pipeline.load_split(config.data, "train")


def mock_coco_source(root: str):
    """configs/mask_rcnn_coco.py's train split: 16 mock panoptic examples (test helpers)."""
    from tests import test_catalog_data as mock  # noqa: PLC0415 (test helpers, optional)

    config = load_config("mask_rcnn_coco.py")
    config.data.download = False
    config.data.data_dir = root
    things = list(catalog.COCO_CLASS_NAMES[1:])
    mock.write_coco_metadata(root, "coco/2017_panoptic", things + mock.PANOPTIC_STUFF)
    examples = mock.random_panoptic_examples(16, np.random.default_rng(0))
    with mock.mocked_tfds({"train": examples}, root):
        return config, pipeline.load_split(config.data, "train")


def time_train_step(config, source, seconds: float) -> dict[str, float]:
    """Images/s of the U-Net step on a fixed batch, fed synchronously, and as training feeds it.

    All three feeds augment (`AUGMENTED`); the last is `train.device_batches`, the training
    loop's own feed: batches assembled and copied to the devices in a background thread.
    """
    config = config.copy_and_resolve_references()
    config.data.scale_jitter = AUGMENTED.scale_jitter
    config.data.color_jitter = AUGMENTED.color_jitter
    mesh = sharding.create_mesh(jax.local_devices())
    schedule = train.create_learning_rate_schedule(config)
    steps = train.CompiledSteps(config, mesh, schedule)
    state = train.initial_state(config, mesh, schedule)
    fields = steps.task.train_fields

    def synchronous():
        return sharded_train_batches(config, source, 0, fields, mesh)

    fixed = next(synchronous())
    feeds = {
        "step alone (one fixed batch)": lambda: iter(lambda: fixed, None),
        "step fed by sharded_train_batches": synchronous,
        "step fed by train.device_batches": lambda: train.device_batches(
            config, source, 0, fields, mesh
        ),
    }
    results = {}
    for name, feed in feeds.items():
        batches = feed()
        for _ in range(2):  # compilation, then one warm step
            state, metrics = steps.train(state, next(batches))
            jax.block_until_ready(metrics)
        count, start = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - start < seconds:
            state, metrics = steps.train(state, next(batches))
            jax.block_until_ready(metrics)
            count += 1
        results[name] = count * config.batch_size / (time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per timing")
    parser.add_argument("--skip_mock_coco", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        unet = load_config("unet_shapes.py")
        shapes = shapes_source(unet, root)
        mask_rcnn = load_config("mask_rcnn_shapes.py")  # the same data, 8 instance slots
        cases = [
            ("shapes (unet_shapes)", unet, shapes, unet.batch_size),
            ("shapes (mask_rcnn_shapes)", mask_rcnn, shapes, mask_rcnn.batch_size),
        ]
        folder_config, source = folder_source(root)
        cases.append(("coco_folder (mask_rcnn_folder)", folder_config, source, 2))
        if not args.skip_mock_coco:
            coco_config, source = mock_coco_source(os.path.join(root, "coco"))
            cases.append(("mock COCO (mask_rcnn_coco)", coco_config, source, 2))

        print(f"input pipeline alone, one thread, >= {args.seconds:g} s per cell (images/s)")
        print(f"| {'dataset (config)':32} | size | batch (config's) |   plain | augmented |")
        print(f"|{'-' * 34}|------|------------------|---------|-----------|")
        augmented = {}
        for name, config, source, batch_size in cases:
            plain, augmented[name] = (
                images_per_second(
                    source, batch_size, config.data.max_instances, augmentation, args.seconds
                )
                for augmentation in (None, AUGMENTED)
            )
            batches = f"{batch_size} ({config.batch_size})"
            print(
                f"| {name:32} | {config.data.image_size:4} | {batches:16} "
                f"| {plain:7.1f} | {augmented[name]:9.1f} |"
            )

        print(f"\nU-Net train step, configs/unet_shapes.py, {jax.local_device_count()} device(s):")
        steps = time_train_step(unet, shapes, args.seconds)
        for name, rate in steps.items():
            print(f"  {name:38} {rate:7.1f} images/s")
    feed = augmented["shapes (unet_shapes)"]
    alone = steps["step alone (one fixed batch)"]
    verdict = "keeps up with" if feed > alone else "does NOT keep up with"
    print(
        f"\nThe augmented shapes pipeline ({feed:.1f} images/s on one thread) {verdict} the "
        f"U-Net step ({alone:.1f} images/s): {feed / alone:.1f}x."
    )


if __name__ == "__main__":
    main()
