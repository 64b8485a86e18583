"""Synthetic batches for benchmarks: random images with a few elliptical objects."""

import numpy as np

OBJECTS_PER_IMAGE = 3


def synthetic_batch(
    batch_size: int, image_size: int, max_instances: int, num_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """A fixed random batch with every field of `jaxseg.data.batching` batches.

    `image [B, S, S, 3]` float32 in [0, 1]; `min(OBJECTS_PER_IMAGE, max_instances)`
    ellipses per image with their tight `boxes [B, G, 4]` (x1, y1, x2, y2 pixels),
    `labels [B, G]` int32 in 1..K-1, `masks [B, G, S, S]` uint8 (and their bits,
    `packed_masks [B, G, S, ceil(S / 8)]`) and `instance_valid [B, G]`; slots past the objects are zero and invalid. `semantic
    [B, S, S]` int32 holds the labels of the ellipses (later ones on top, 0 elsewhere);
    `valid [B]` is all True and `index [B]` int32 counts from 0.
    """
    rng = np.random.default_rng(seed)
    shape = (batch_size, max_instances)
    batch = {
        "image": rng.random((batch_size, image_size, image_size, 3), dtype=np.float32),
        "boxes": np.zeros(shape + (4,), np.float32),
        "labels": np.zeros(shape, np.int32),
        "masks": np.zeros(shape + (image_size, image_size), np.uint8),
        "instance_valid": np.zeros(shape, bool),
        "semantic": np.zeros((batch_size, image_size, image_size), np.int32),
        "valid": np.ones(batch_size, bool),
        "index": np.arange(batch_size, dtype=np.int32),
    }
    rows, cols = np.mgrid[:image_size, :image_size] + 0.5
    for image in range(batch_size):
        for slot in range(min(OBJECTS_PER_IMAGE, max_instances)):
            width, height = rng.uniform(0.1, 0.4, 2) * image_size
            left = rng.uniform(0, image_size - width)
            top = rng.uniform(0, image_size - height)
            inside = (
                ((cols - left - width / 2) / (width / 2)) ** 2
                + ((rows - top - height / 2) / (height / 2)) ** 2
            ) <= 1.0
            ys, xs = np.nonzero(inside)
            batch["boxes"][image, slot] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            batch["labels"][image, slot] = rng.integers(1, num_classes)
            batch["masks"][image, slot] = inside
            batch["instance_valid"][image, slot] = True
            batch["semantic"][image][inside] = batch["labels"][image, slot]
    batch["packed_masks"] = np.packbits(batch["masks"], axis=-1)
    return batch
