"""Images/s of the grain input streams with 0, 1 and 2 worker processes, and the step they feed.

Streams (`batching.train_batches`, each in its config's training form, flips on, making the
fields its task trains on: images as uint8 pixels, Mask R-CNN's masks as bits,
`packed_masks`):
  shapes        configs/unet_shapes.py (128, batch 8, no augmentation; decoded examples
                cached: the calling thread's cache is filled first, each worker fills its
                own as it reads).
  coco_folder   configs/mask_rcnn_folder.py (512, 32 instance slots, scale jitter 0.8-1.25,
                colour jitter 0.2): a COCO-format JSON and PNGs of 375x500 to 640x480 pixels
                written here in a temp dir, decoded at every read (cache_decoded=False).
  coco1024      the same folder on a 1024 canvas with configs/mask_rcnn_coco.py's 100
                instance slots (the same augmentation, longer side fitted to 1024), batch 2.
  coco1344      the same folder at configs/mask_rcnn_coco.py's own data: 1344 canvas,
                shorter side drawn from 640-800 per image (longer at most 1333), fitted from
                the source pixels, colour jitter 0.2, no scale jitter, 100 slots, batch 2.
Streams run with 0, 1 and 2 workers (0..--max_workers). Each cell times the stream for at
least --seconds after its first batch (which includes the workers' start). "same 50" checks that the first 50 (--same_steps) batches with workers
equal, bit for bit, those made in the calling thread.
Then the jitted U-Net train step of configs/unet_shapes.py (all local devices) on one fixed
batch, and fed by the training loop's own feed (`training.feed.device_batches`) with 0, 1
and 2 workers. Then the peak host memory of the coco1024 stream at the COCO config's batch
of 16 with 2 workers (a fresh process; the sum of the main process's and the workers'
peak resident sets, so shared memory is counted twice: an upper bound).

Usage: python -m benchmarks.input_pipeline [--seconds=3] [--same_steps=50]
  [--folder_images=40] [--probe_steps=6] [--json]
With --json the last line is one JSON object: {"coco1024_augmented": {"0": images/s, "1":
..., "2": ...}, "shapes": {...}, "coco_folder_augmented": {...}, "coco1344_augmented": {...},
"same_batches": {...},
"unet_step": {...}, "coco1024_peak_memory_gb": ...}.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the memory probe

from jaxseg import config_files, registry, sharding, train  # noqa: E402
from jaxseg.data import batching, pipeline  # noqa: E402
from jaxseg.training.feed import device_batches  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
FOLDER_SHAPES = ((480, 640), (640, 480), (375, 500), (512, 512))


def load_config(name: str):
    return config_files.load_config_file(str(REPO / "configs" / name))


def train_fields(config) -> tuple[str, ...]:
    """The batch fields the task of `config.model` trains on (all that its stream makes)."""
    task = registry.MODELS.get(config.model.name).task
    return registry.TASKS.get(task).target.train_fields


def stream(config, source, batch_size: int, workers: int, start_step: int = 0):
    """`config`'s training stream of `source` at `batch_size` with `workers` processes,
    making the fields its task trains on, as the training loop's feed does."""
    return batching.train_batches(
        source,
        batch_size,
        config.seed,
        start_step,
        flip=config.data.flip,
        augmentation=pipeline.augmentation_from_data_config(config.data),
        max_instances=config.data.max_instances,
        num_workers=workers,
        fields=train_fields(config),
    )


def images_per_second(config, source, batch_size: int, workers: int, seconds: float) -> float:
    """Images/s of the stream over at least `seconds` (and 3 batches) after its first batch."""
    batches = stream(config, source, batch_size, workers)
    next(batches)
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        next(batches)
        count += 1
    rate = count * batch_size / (time.perf_counter() - start)
    batches.close()
    return rate


def same_batches(config, source, batch_size: int, workers: int, steps: int) -> bool:
    """Whether the first `steps` batches with `workers` equal those made in this thread."""
    made = [stream(config, source, batch_size, count) for count in (0, workers)]
    try:
        for _ in range(steps):
            first, second = (next(batches) for batches in made)
            if first.keys() != second.keys() or not all(
                np.array_equal(first[name], second[name]) for name in first
            ):
                return False
        return True
    finally:
        for batches in made:
            batches.close()


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


def write_coco_folder(root: str, count: int) -> tuple[str, str, tuple[str, ...]]:
    """`count` PNGs (smooth colours plus noise) and a COCO-format JSON with 2-6
    polygon instances of 3 categories per image; returns (json path, images dir, names)."""
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for index in range(count):
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


# The canvas of the coco1024 stream (its recorded figures are at this size).
COCO1024_SIZE = 1024


# configs/mask_rcnn_coco.py's own data: its geometry and augmentation.
COCO_FIELDS = (
    "image_size",
    "resize_shorter_side",
    "resize_max_longer_side",
    "train_shorter_sides",
    "scale_jitter",
    "color_jitter",
    "max_instances",
)


def folder_source(root: str, image_size: int, max_instances: int, images: int, data=None):
    """configs/mask_rcnn_folder.py's data at `image_size` and `max_instances` (or, with
    `data`, those of its `COCO_FIELDS`) over the COCO folder of `images` images written under
    `root` (written once); (config, train split)."""
    config = load_config("mask_rcnn_folder.py")
    folder = os.path.join(root, "coco_folder")
    if not os.path.exists(folder):
        write_coco_folder(folder, images)
    config.data.annotations = os.path.join(folder, "instances.json")
    config.data.images = os.path.join(folder, "images")
    config.data.num_classes, config.data.class_names = 4, ("background", "a", "b", "c")
    config.data.data_dir = os.path.join(root, "tfds")
    config.data.image_size, config.data.max_instances = image_size, max_instances
    for field in COCO_FIELDS if data is not None else ():
        config.data[field] = data[field]
    return config, pipeline.load_split(config.data, "train")


def time_train_step(config, source, seconds: float, workers: range) -> dict[str, float]:
    """Images/s of the U-Net step on a fixed batch, and fed by `device_batches` (the training
    loop's feed) with each count of input `workers`."""
    mesh = sharding.create_mesh(jax.local_devices())
    schedule = train.create_learning_rate_schedule(config)
    steps = train.CompiledSteps(config, mesh, schedule)
    state = train.initial_state(config, mesh, schedule)
    fields = steps.task.train_fields

    def fed_by(workers: int):
        config.data.num_workers = workers
        return device_batches(config, source, 0, fields, mesh)

    fixed = next(fed_by(0))
    feeds = {"fixed batch": lambda: iter(lambda: fixed, None)}
    feeds.update({f"{count} workers": (lambda w=count: fed_by(w)) for count in workers})
    results = {}
    for name, feed in feeds.items():
        batches = feed()
        for _ in range(2):  # compilation (or the workers' start), then one warm step
            state, metrics = steps.train(state, next(batches))
            jax.block_until_ready(metrics)
        count, start = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - start < seconds:
            state, metrics = steps.train(state, next(batches))
            jax.block_until_ready(metrics)
            count += 1
        results[name] = count * config.batch_size / (time.perf_counter() - start)
        getattr(batches, "close", lambda: None)()
    return results


def _peak_resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_probe(root: str, steps: int, images: int, workers: int) -> None:
    """Prints the summed peak resident bytes of this process and its `workers` workers over
    `steps` batches of the COCO config's size (run in a fresh process by `peak_memory_gb`)."""
    import multiprocessing  # noqa: PLC0415

    coco = load_config("mask_rcnn_coco.py")
    config, source = folder_source(root, COCO1024_SIZE, coco.data.max_instances, images)
    batches = stream(config, source, coco.batch_size, workers)
    worker_peaks = {}
    for _ in range(steps):
        next(batches)
        for child in multiprocessing.active_children():
            worker_peaks[child.pid] = _peak_resident_bytes(child.pid)
    print(_peak_resident_bytes(os.getpid()) + sum(worker_peaks.values()))
    batches.close()


def peak_memory_gb(root: str, steps: int, images: int, workers: int) -> float:
    """`memory_probe` in a fresh process, in GB (1e9 bytes)."""
    command = [
        sys.executable, __file__, f"--memory_probe={root}", f"--probe_steps={steps}",
        f"--folder_images={images}", f"--max_workers={workers}",
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return int(output.split()[-1]) / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per timing")
    parser.add_argument("--same_steps", type=int, default=50, help="batches compared")
    parser.add_argument("--folder_images", type=int, default=40, help="images of the folder")
    parser.add_argument("--probe_steps", type=int, default=6, help="batches of the memory probe")
    parser.add_argument("--max_workers", type=int, default=2, help="streams with 0..this many")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--memory_probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.folder_images < 4 or min(args.same_steps, args.probe_steps, args.max_workers + 1) < 1:
        parser.error(
            "--folder_images must be at least 4, --same_steps and --probe_steps 1, "
            "--max_workers 0"
        )
    if args.memory_probe:
        memory_probe(args.memory_probe, args.probe_steps, args.folder_images, args.max_workers)
        return
    workers, most = range(args.max_workers + 1), args.max_workers

    record = {}
    with tempfile.TemporaryDirectory() as root:
        unet = load_config("unet_shapes.py")
        shapes = shapes_source(unet, root)
        images = args.folder_images
        folder_config, folder = folder_source(root, 512, 32, images)
        coco = load_config("mask_rcnn_coco.py")
        coco_config, coco_source = folder_source(
            os.path.join(root, "coco1024"), COCO1024_SIZE, coco.data.max_instances, images
        )
        own_config, own_source = folder_source(
            os.path.join(root, "coco1344"), 0, 0, images, data=coco.data
        )
        cases = [
            ("shapes", "shapes (unet_shapes)", unet, shapes, unet.batch_size),
            ("coco_folder_augmented", "coco_folder (mask_rcnn_folder)", folder_config, folder, 2),
            ("coco1024_augmented", "coco_folder at mask_rcnn_coco's data", coco_config,
             coco_source, 2),
            ("coco1344_augmented", "coco_folder at mask_rcnn_coco's own", own_config,
             own_source, 2),
        ]
        print(f"training streams, images/s (>= {args.seconds:g} s per cell)")
        counts = "".join(f" {count} workers |" for count in workers)
        print(f"| {'stream (config)':36} | size | batch |{counts} {most} vs 0 "
              f"| same {args.same_steps} (1..{most} workers) |")
        print(f"|{'-' * 38}|------|-------|" + "-----------|" * (len(workers) + 1) + "---|")
        record["same_batches"] = {}
        for key, name, config, source, batch_size in cases:
            rates = {
                str(count): images_per_second(config, source, batch_size, count, args.seconds)
                for count in workers
            }
            same = [
                same_batches(config, source, batch_size, count, args.same_steps)
                for count in workers[1:]
            ]
            record[key] = rates
            record["same_batches"][key] = all(same)
            cells = "".join(f" {rates[str(count)]:9.1f} |" for count in workers)
            print(
                f"| {name:36} | {config.data.image_size:4} | {batch_size:5} |{cells} "
                f"{rates[str(most)] / rates['0']:5.2f}x | {same} |"
            )
        print(f"\nU-Net train step, configs/unet_shapes.py, {jax.local_device_count()} device(s):")
        record["unet_step"] = time_train_step(unet, shapes, args.seconds, workers)
        for name, rate in record["unet_step"].items():
            print(f"  {name:14} {rate:7.1f} images/s")
        record["coco1024_peak_memory_gb"] = peak_memory_gb(
            os.path.join(root, "coco1024"), args.probe_steps, images, most
        )
        print(
            f"\ncoco1024 stream at batch {coco.batch_size}, {most} workers: peak host memory "
            f"{record['coco1024_peak_memory_gb']:.2f} GB (main + workers, upper bound)"
        )
    if args.json:
        print(json.dumps(record))


if __name__ == "__main__":
    main()
