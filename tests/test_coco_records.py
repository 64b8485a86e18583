"""Records that keep the source (jaxseg.data.coco_records) against the definition: every
mask decoded by pycocotools at the image's size, resized by `geometry.resize_nearest` onto
the canvas, painted in order into the semantic map, boxes the masks' tight boxes."""

import io
import pickle
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from jaxseg.data import augment, batching, coco_records, geometry, pipeline

IGNORE = 250


def _jpeg(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _record(rng, height, width, count, crowd_every=5):
    """A record of random rectangles and blobs (some of one pixel), every `crowd_every`-th
    a crowd."""
    masks = np.zeros((count, height, width), np.uint8)
    for mask in masks:
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1 = min(height, y0 + int(rng.integers(1, height // 2 + 2)))
        x1 = min(width, x0 + int(rng.integers(1, width // 2 + 2)))
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.8
        mask[y0, x0] = 1
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    record = {
        "image_file": _jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)),
        "mask_rles": np.array([rle["counts"] for rle in rles], dtype=np.object_),
        "labels": rng.integers(1, 9, count).astype(np.int32),
        "crowd": np.arange(count) % crowd_every == crowd_every - 1,
        "image_id": 7,
        "file_name": b"x.jpg",
        "height": height,
        "width": width,
    }
    return record, masks


def _reference(record, masks, fit):
    """The example by the definition (module docstring), one mask at a time."""
    pixels = np.asarray(Image.open(io.BytesIO(record["image_file"])).convert("RGB"))
    image, _ = geometry.fit_image(pixels, fit)
    semantic = geometry.fit_nearest(np.zeros(masks.shape[1:], np.int32), fit, IGNORE)
    kept_masks, boxes, labels = [], [], []
    for mask, label, crowd in zip(masks, record["labels"], record["crowd"]):
        fitted = geometry.fit_nearest(mask, fit, 0)
        if not fitted.any():
            continue
        semantic[fitted == 1] = label
        if not crowd:
            rows, columns = np.flatnonzero(fitted.any(1)), np.flatnonzero(fitted.any(0))
            kept_masks.append(fitted)
            boxes.append([columns[0], rows[0], columns[-1] + 1, rows[-1] + 1])
            labels.append(label)
    size = fit.canvas
    return {
        "image": image,
        "semantic": semantic,
        "masks": np.array(kept_masks, np.uint8).reshape(-1, size, size),
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "labels": np.array(labels, np.int32),
    }


@pytest.mark.parametrize(
    "height, width, count, fit",
    [
        (30, 40, 6, geometry.Fit(64)),  # enlarged, longer side
        (48, 36, 9, geometry.Fit(64, shorter_side=20, max_longer_side=60)),  # shrunk: some vanish
        (20, 25, 70, geometry.Fit(48, shorter_side=40)),  # two bit planes (64 + 6 masks)
        (16, 16, 0, geometry.Fit(32)),  # no annotation
        (31, 17, 3, geometry.Fit(40, shorter_side=17)),  # the same size: no resize
    ],
)
def test_fitted_example_matches_the_definition(height, width, count, fit):
    record, masks = _record(np.random.default_rng(count), height, width, count)
    example = coco_records.fitted_example(record, fit, IGNORE)
    expected = _reference(record, masks, fit)
    assert example.keys() == expected.keys()
    for name, value in expected.items():
        assert example[name].dtype == value.dtype, name
        np.testing.assert_array_equal(example[name], value, err_msg=name)


def test_shrinking_drops_a_vanished_instance_but_keeps_the_others():
    record, masks = _record(np.random.default_rng(1), 48, 36, 9)
    fit = geometry.Fit(64, shorter_side=12, max_longer_side=60)
    vanished = [geometry.fit_nearest(mask, fit, 0).any() for mask in masks].count(False)
    example = coco_records.fitted_example(record, fit, IGNORE)
    assert vanished > 0
    assert len(example["labels"]) == sum(
        1 for mask, crowd in zip(masks, record["crowd"])
        if geometry.fit_nearest(mask, fit, 0).any() and not crowd
    )


def test_read_source_keeps_the_file_bytes_and_reports_skips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    entry = {"id": 3, "file_name": "a.png", "height": 12, "width": 20}
    annotations = [
        {"id": 1, "category_id": 5, "segmentation": [[1, 1, 9, 1, 9, 7, 1, 7]]},
        {"id": 2, "category_id": 5, "segmentation": [[1, 1, 2, 2]]},  # degenerate
        {"id": 3, "category_id": 9, "iscrowd": 1,
         "segmentation": {"size": [12, 20], "counts": [0, 240]}},
    ]
    record, skips = coco_records.read_source(
        (entry, annotations, str(tmp_path), geometry.Fit(40), {5: 1, 9: 2})
    )
    assert record["image_file"] == (tmp_path / "a.png").read_bytes()
    assert (record["image_id"], record["height"], record["width"]) == (3, 12, 20)
    np.testing.assert_array_equal(record["labels"], [1, 2])
    np.testing.assert_array_equal(record["crowd"], [False, True])
    square = mask_utils.decode({"size": [12, 20], "counts": record["mask_rles"][0]})
    expected = np.zeros((12, 20), np.uint8)
    expected[1:7, 1:9] = 1
    np.testing.assert_array_equal(square, expected)
    assert skips == [("annotations with empty or degenerate polygons", "annotation 2 of a.png")]


def test_a_truncated_file_is_found_when_prepared(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "t.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    entry = {"id": 1, "file_name": "t.jpg"}
    record, skips = coco_records.read_source((entry, [], str(tmp_path), geometry.Fit(32), {}))
    assert record is None
    [(reason, item)] = skips
    assert reason == "unreadable images" and item.startswith(os.path.join(tmp_path, "t.jpg"))


def test_worker_threads_give_the_records_of_the_calling_thread(tmp_path):
    rng = np.random.default_rng(2)
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
            tmp_path / f"{index}.png"
        )
    jobs = [
        ({"id": index, "file_name": f"{index}.png"},
         [{"id": index, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]}],
         str(tmp_path), geometry.Fit(16), {1: 1})
        for index in range(6)
    ]
    here = list(coco_records.read_sources(jobs, workers=0))
    in_workers = list(coco_records.read_sources(jobs, workers=2))
    assert len(here) == len(in_workers) == 6
    for (first, _), (second, _) in zip(here, in_workers):
        assert first.keys() == second.keys()
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])


def test_multi_scale_training_fits_the_source_pixels_at_a_listed_side():
    rng = np.random.default_rng(3)
    records = [_record(rng, 30, 44, 4)[0], _record(rng, 40, 24, 3)[0]]
    fit = geometry.Fit(64, shorter_side=40, max_longer_side=60)
    source = pipeline.DecodedSource(records, fit=fit, ignore_label=IGNORE)
    assert source.keeps_source
    sides = (20, 28, 40)
    augmentation = augment.augmentation(shorter_sides=sides, fit=fit, ignore_label=IGNORE)
    batches = batching.train_batches(
        source, 2, seed=0, flip=False, augmentation=augmentation, max_instances=8
    )
    seen = set()
    for _ in range(6):
        batch = next(batches)
        for row, index in enumerate(batch["index"]):
            candidates = {
                side: coco_records.fitted_example(
                    records[index], fit.with_shorter_side(side), IGNORE
                )
                for side in sides
            }
            matches = [
                side for side, example in candidates.items()
                if np.array_equal(example["image"], batch["image"][row])
                and np.array_equal(example["semantic"], batch["semantic"][row])
            ]
            assert len(matches) == 1, (index, matches)
            example = candidates[matches[0]]
            count = len(example["labels"])
            np.testing.assert_array_equal(batch["masks"][row, :count], example["masks"])
            np.testing.assert_array_equal(batch["boxes"][row, :count], example["boxes"])
            seen.add(matches[0])
    assert len(seen) > 1
    batches.close()


def test_a_worker_process_makes_the_same_batches_of_source_records():
    rng = np.random.default_rng(4)
    records = [_record(rng, 30, 44, 4)[0] for _ in range(4)]
    fit = geometry.Fit(64, shorter_side=40, max_longer_side=60)
    source = pipeline.DecodedSource(records, fit=fit, ignore_label=IGNORE)
    augmentation = augment.augmentation(
        shorter_sides=(20, 40), color_jitter=0.2, fit=fit, ignore_label=IGNORE
    )
    streams = [
        batching.train_batches(
            source, 2, seed=1, augmentation=augmentation, max_instances=8, num_workers=workers
        )
        for workers in (0, 1)
    ]
    for _ in range(3):
        here, there = (next(stream) for stream in streams)
        assert here.keys() == there.keys()
        for name in here:
            np.testing.assert_array_equal(here[name], there[name], err_msg=name)
    for stream in streams:
        stream.close()


class _CountingRecords(list):
    """Records that count the reads of each index."""

    def __init__(self, records):
        super().__init__(records)
        self.reads = [0] * len(records)

    def __getitem__(self, index):
        self.reads[index] += 1
        return super().__getitem__(index)


def test_each_examples_id_and_placement_cost_one_read_of_its_record():
    """Evaluation asks every example's id and placement, in frames and per batch: the
    record (image bytes and masks) is read for them once."""
    rng = np.random.default_rng(5)
    sizes = [(30, 44), (40, 24), (16, 16)]
    records = _CountingRecords([_record(rng, h, w, 2)[0] for h, w in sizes])
    fit = geometry.Fit(64)
    ids = [int(record["image_id"]) for record in list.__iter__(records)]
    source = pipeline.DecodedSource(records, fit=fit, ignore_label=IGNORE)
    for _ in range(3):
        for index, size in enumerate(sizes):
            assert source.placement(index) == geometry.placement(size, fit)
            assert source.image_id(index) == ids[index]
    # Each index read once, and index 0 once more for the kind of records (`keeps_source`).
    assert records.reads == [2, 1, 1]
    copy = pickle.loads(pickle.dumps(source))
    assert copy.placement(2) == source.placement(2)  # a worker's copy reads its own
