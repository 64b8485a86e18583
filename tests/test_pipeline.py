"""Tests of the input pipeline (jaxseg.data.pipeline) on a tiny generated dataset."""
import hashlib
import math
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg.data import augment, batching, folders, geometry, pipeline
from jaxseg.data.sources import checks

SIZE = 32
MAX_INSTANCES = 6  # = max_shapes, so no example is truncated


def _tiny_data_config(data_dir):
    config = pipeline.default_data_config()
    config.data_dir = str(data_dir)
    config.image_size = SIZE
    config.num_train = 20
    config.num_validation = 6
    config.num_test = 4
    config.min_object_size = 0.15
    config.max_object_size = 0.6
    config.min_visible_pixels = 4
    config.empty_fraction = 0.15
    config.max_instances = MAX_INSTANCES
    return config


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    return _tiny_data_config(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def train_source(data_config):
    return pipeline.load_split(data_config, "train")


@pytest.fixture(scope="module")
def validation_source(data_config):
    return pipeline.load_split(data_config, "validation")


def _key(image_uint8):
    return hashlib.sha1(np.ascontiguousarray(image_uint8).tobytes()).hexdigest()


def _tight_box(mask):
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_decoded_examples_are_consistent(train_source):
    assert len(train_source) == 20
    counts = []
    for index in range(len(train_source)):
        example = train_source[index]
        image, semantic, masks = example["image"], example["semantic"], example["masks"]
        boxes, labels = example["boxes"], example["labels"]
        n = len(labels)
        counts.append(n)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert semantic.shape == (SIZE, SIZE) and semantic.dtype == np.int32
        assert masks.shape == (n, SIZE, SIZE) and masks.dtype == np.uint8
        assert boxes.shape == (n, 4) and boxes.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int32
        assert set(labels.tolist()) <= {1, 2, 3}
        assert masks.sum(axis=0).max(initial=0) <= 1  # visible parts do not overlap
        union = np.zeros((SIZE, SIZE), np.int32)
        for k in range(n):
            union[masks[k] == 1] = labels[k]
            np.testing.assert_array_equal(boxes[k], _tight_box(masks[k]))
        np.testing.assert_array_equal(semantic, union)
    assert 0 in counts and max(counts) > 1
    with pytest.raises(IndexError):
        train_source[20]


def test_load_split_is_deterministic_and_splits_differ(data_config, train_source, tmp_path):
    rebuilt_config = _tiny_data_config(tmp_path)
    rebuilt_config.cache_decoded = False
    rebuilt = pipeline.load_split(rebuilt_config, "train")
    for index in range(len(train_source)):
        for name, value in train_source[index].items():
            np.testing.assert_array_equal(rebuilt[index][name], value, err_msg=name)
    test_source = pipeline.load_split(data_config, "test")
    test_images = {_key(test_source[i]["image"]) for i in range(len(test_source))}
    train_images = {_key(train_source[i]["image"]) for i in range(len(train_source))}
    assert not test_images & train_images


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("image_size", 8, "image_size"),
        ("image_size", 33.5, "image_size"),
        ("name", "coco", "name"),
        ("num_train", 0, "num_train"),
    ],
)
def test_load_split_rejects_bad_config(data_config, field, value, message):
    bad = ml_collections.ConfigDict({**data_config.to_dict(), field: value})
    with pytest.raises(ValueError, match=message):
        pipeline.load_split(bad, "train")


def test_load_split_rejects_unknown_split(data_config):
    with pytest.raises(ValueError, match="split"):
        pipeline.load_split(data_config, "dev")


def test_train_batch_shapes_dtypes_and_padding(train_source):
    batch = next(batching.train_batches(train_source, 8, seed=0, max_instances=MAX_INSTANCES))
    expected = {
        "image": ((8, SIZE, SIZE, 3), np.uint8),
        "semantic": ((8, SIZE, SIZE), np.int32),
        "masks": ((8, MAX_INSTANCES, SIZE, SIZE), np.uint8),
        "packed_masks": ((8, MAX_INSTANCES, SIZE, SIZE // 8), np.uint8),
        "boxes": ((8, MAX_INSTANCES, 4), np.float32),
        "labels": ((8, MAX_INSTANCES), np.int32),
        "instance_valid": ((8, MAX_INSTANCES), np.bool_),
        "valid": ((8,), np.bool_),
        "index": ((8,), np.int32),
        "image_hw": ((8, 2), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    np.testing.assert_array_equal(batch["image_hw"], np.full((8, 2), SIZE))
    assert batch["valid"].all()
    np.testing.assert_array_equal(batch["instance_valid"], batch["labels"] > 0)
    empty_slots = ~batch["instance_valid"]
    assert not batch["masks"][empty_slots].any() and not batch["boxes"][empty_slots].any()


def test_flips_are_applied_to_all_fields_together(train_source):
    by_image = {_key(train_source[i]["image"]): i for i in range(len(train_source))}
    patterns = []
    for batch in _take(batching.train_batches(train_source, 10, seed=3,
                                              max_instances=MAX_INSTANCES), 6):
        pattern = []
        for row in range(10):
            image = batch["image"][row]
            if _key(image) in by_image:
                source_index, mirrored = by_image[_key(image)], False
            else:
                source_index, mirrored = by_image[_key(image[:, ::-1])], True
            original = train_source[source_index]
            pattern.append(mirrored)
            n = len(original["labels"])
            assert n <= MAX_INSTANCES
            mirror = (lambda a: a[..., ::-1]) if mirrored else (lambda a: a)
            np.testing.assert_array_equal(batch["semantic"][row], mirror(original["semantic"]))
            np.testing.assert_array_equal(batch["masks"][row, :n], mirror(original["masks"]))
            np.testing.assert_array_equal(batch["labels"][row, :n], original["labels"])
            for k in range(n):
                mask = batch["masks"][row, k]
                np.testing.assert_array_equal(batch["boxes"][row, k], _tight_box(mask))
                if mirrored:  # x1' = W - x2, x2' = W - x1; y unchanged
                    x1, y1, x2, y2 = original["boxes"][k]
                    np.testing.assert_array_equal(
                        batch["boxes"][row, k], [SIZE - x2, y1, SIZE - x1, y2]
                    )
        patterns.append(tuple(pattern))
    flipped = sum(sum(p) for p in patterns)
    assert len(set(patterns)) > 1 and 10 < flipped < 50  # flips vary per example and per step


def test_no_flip_option_keeps_images(train_source):
    keys = {_key(train_source[i]["image"]) for i in range(len(train_source))}
    batch = next(batching.train_batches(train_source, 20, seed=5, flip=False,
                                        max_instances=MAX_INSTANCES))
    assert {_key(image) for image in batch["image"]} == keys


def test_each_epoch_is_a_permutation(train_source):
    def order(seed):
        batches = _take(batching.train_batches(train_source, 8, seed=seed, flip=False,
                                               max_instances=MAX_INSTANCES), 5)
        semantic = np.concatenate([b["semantic"] for b in batches])  # 40 = two epochs
        images = np.concatenate([b["image"] for b in batches])
        return [_key(image) for image in images], semantic

    keys, _ = order(0)
    all_keys = {_key(train_source[i]["image"]) for i in range(20)}
    assert set(keys[:20]) == all_keys and set(keys[20:]) == all_keys
    assert keys[:20] != keys[20:]
    assert order(1)[0] != keys


def test_resuming_at_a_step_gives_the_same_batches(train_source):
    kwargs = dict(max_instances=MAX_INSTANCES)
    straight = _take(batching.train_batches(train_source, 6, 11, **kwargs), 9)
    resumed = _take(batching.train_batches(train_source, 6, 11, start_step=4, **kwargs), 5)
    _assert_batches_equal(straight[4:], resumed)


def test_process_shares_concatenate_to_the_global_batch(train_source, validation_source):
    kwargs = dict(max_instances=MAX_INSTANCES)
    whole = _take(batching.train_batches(train_source, 8, 2, **kwargs), 4)
    shares = [
        _take(batching.train_batches(train_source, 8, 2, process_index=p, process_count=2,
                                     **kwargs), 4)
        for p in range(2)
    ]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*shares)]
    _assert_batches_equal(whole, joined)

    whole = list(batching.eval_batches(validation_source, 4, **kwargs))
    shares = [
        list(batching.eval_batches(validation_source, 4, process_index=p, process_count=2,
                                   **kwargs))
        for p in range(2)
    ]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*shares)]
    _assert_batches_equal(whole, joined)


@pytest.mark.parametrize("batch_size, process_count", [(4, 1), (5, 1), (6, 1), (8, 2), (2, 2)])
def test_eval_covers_every_example_once_in_order(validation_source, batch_size, process_count):
    num = len(validation_source)
    shares = [
        list(batching.eval_batches(validation_source, batch_size, max_instances=MAX_INSTANCES,
                                   process_index=p, process_count=process_count))
        for p in range(process_count)
    ]
    assert all(len(batches) == math.ceil(num / batch_size) for batches in shares)
    rows = []
    for step in range(len(shares[0])):
        for share in shares:
            batch = share[step]
            rows.extend({k: v[i] for k, v in batch.items()} for i in range(len(batch["valid"])))
    assert len(rows) == math.ceil(num / batch_size) * batch_size
    for index, row in enumerate(rows):
        if index < num:
            example = validation_source[index]
            assert row["valid"]
            np.testing.assert_array_equal(row["image"], example["image"])
            np.testing.assert_array_equal(row["semantic"], example["semantic"])
            n = len(example["labels"])
            np.testing.assert_array_equal(row["labels"][:n], example["labels"])
        else:
            assert not row["valid"]
            assert not row["image"].any() and not row["semantic"].any()
            assert not row["instance_valid"].any() and not row["masks"].any()


def _square_example(sides):
    """An example with one square instance per side length, laid out left to right."""
    masks = np.zeros((len(sides), 16, 16), np.uint8)
    boxes = np.zeros((len(sides), 4), np.float32)
    left = 0
    for k, side in enumerate(sides):
        masks[k, 0:side, left:left + side] = 1
        boxes[k] = (left, 0, left + side, side)
        left += side
    labels = np.arange(1, len(sides) + 1, dtype=np.int32) % 3 + 1
    semantic = (masks * labels[:, None, None]).sum(axis=0).astype(np.int32)
    image = np.zeros((16, 16, 3), np.uint8)
    return {"image": image, "semantic": semantic, "masks": masks, "boxes": boxes,
            "labels": labels}


def test_too_many_instances_keep_the_largest_and_warn_once():
    source = [_square_example([2, 5, 3, 4]), _square_example([1, 2, 3, 4]),
              _square_example([])]
    with pytest.warns(UserWarning, match="max_instances=2") as record:
        batch = next(batching.eval_batches(source, 3, max_instances=2))
    assert len(record) == 1
    np.testing.assert_array_equal(batch["boxes"][0], [[2, 0, 7, 5], [10, 0, 14, 4]])
    np.testing.assert_array_equal(batch["labels"][0], source[0]["labels"][[1, 3]])
    np.testing.assert_array_equal(batch["masks"][0], source[0]["masks"][[1, 3]])
    np.testing.assert_array_equal(batch["boxes"][1], [[3, 0, 6, 3], [6, 0, 10, 4]])
    assert not batch["instance_valid"][2].any() and batch["valid"].all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=6, process_count=4), "divisible"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=4, process_index=2, process_count=2), "process_index"),
        (dict(batch_size=4, max_instances=0), "max_instances"),
    ],
)
def test_bad_batching_arguments(train_source, kwargs, message):
    kwargs = {"max_instances": MAX_INSTANCES, **kwargs}
    with pytest.raises(ValueError, match=message):
        batching.train_batches(train_source, seed=0, **kwargs)
    with pytest.raises(ValueError, match=message):
        batching.eval_batches(train_source, **kwargs)


def test_bad_stream_position_and_empty_source(train_source):
    with pytest.raises(ValueError, match="start_step"):
        batching.train_batches(train_source, 4, 0, start_step=-1, max_instances=2)
    with pytest.raises(ValueError, match="seed"):
        batching.train_batches(train_source, 4, -3, max_instances=2)
    with pytest.raises(ValueError, match="empty"):
        batching.eval_batches([], 4, max_instances=2)


def test_index_field_names_the_source_examples(validation_source):
    source = validation_source
    seen = []
    for batch in batching.eval_batches(source, 4, max_instances=MAX_INSTANCES):
        for row in np.flatnonzero(batch["valid"]):
            example = source[int(batch["index"][row])]
            np.testing.assert_array_equal(batch["image"][row], example["image"])
        seen.extend(batch["index"][batch["valid"]].tolist())
        assert np.all(batch["index"][~batch["valid"]] == -1)
    assert seen == list(range(len(source)))
    train = next(batching.train_batches(source, 4, 0, flip=False, max_instances=MAX_INSTANCES))
    for row, index in enumerate(train["index"]):
        np.testing.assert_array_equal(train["semantic"][row], source[int(index)]["semantic"])


def test_unknown_dataset_and_split_name_the_choices(data_config, tmp_path):
    unknown = ml_collections.ConfigDict({**data_config.to_dict(), "name": "voc"})
    registered = "'coco_folder', 'coco_panoptic_folder', 'panoptic_shapes', 'semantic_folder', 'shapes', 'tfds'"
    with pytest.raises(ValueError, match=f"config.data.name='voc' is not a registered dataset: {registered}."):
        pipeline.load_split(unknown, "train")
    folder = ml_collections.ConfigDict({"name": "semantic_folder", "data_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"split 'test' of semantic_folder; .*\('train', 'valid"):
        pipeline.load_split(folder, "test")


@pytest.mark.parametrize(
    "shape, resized",
    [
        ((16, 32), (16, 32)),
        ((64, 32), (32, 16)),
        ((10, 20), (16, 32)),  # 10 · 1.6 = 16
        ((20, 13), (32, 21)),  # 13 · 1.6 = 20.8
        ((30, 15), (32, 16)),  # 15 · 32 / 30 = 16
        ((5, 400), (1, 32)),  # 0.4 rounds up to the minimum of 1
    ],
)
def test_folder_resize_keeps_the_aspect_ratio(shape, resized):
    assert geometry.resized_shape(*shape, geometry.Fit(32)) == resized


def test_folder_nearest_fit_samples_pixel_centres_and_pads():
    values = np.arange(12, dtype=np.uint8).reshape(3, 4)  # 3 x 4 -> 6 x 8, then padded to 8
    expected = np.full((8, 8), 99, np.uint8)
    expected[:6] = np.repeat(np.repeat(values, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(geometry.fit_nearest(values, geometry.Fit(8), fill=99), expected)
    # Shrinking 4 -> 3 samples floor((i + 0.5) · 4 / 3) = 0, 2, 3.
    shrunk = geometry.fit_nearest(
        np.arange(4, dtype=np.uint8)[None].repeat(4, 0), geometry.Fit(3), fill=9
    )
    np.testing.assert_array_equal(shrunk[0], [0, 2, 3])


@pytest.mark.parametrize("count, fraction, expected", [(2, 0.01, 1), (10, 0.25, 2), (4, 0.99, 3)])
def test_folder_validation_split_size(count, fraction, expected):
    names = [f"image_{k}.png" for k in range(count)]
    mask = folders.validation_mask(names, fraction)
    assert mask.sum() == expected
    np.testing.assert_array_equal(folders.validation_mask(names[::-1], fraction), mask[::-1])
    with pytest.raises(ValueError, match="at least 2 usable images"):
        folders.validation_mask(names[:1], fraction)


def test_float_images_travel_rounded_to_uint8_and_reach_the_model_in_unit_range():
    # Augmented images are float32 in [0, 255]; ties round to even.
    values = np.array([0.0, 0.49, 0.5, 1.5, 2.5, 127.51, 254.5, 254.7, 255.0], np.float32)
    image = np.resize(values, (4, 4, 3)).astype(np.float32)
    example = {"image": image, "semantic": np.zeros((4, 4), np.int32),
               "masks": np.zeros((0, 4, 4), np.uint8), "boxes": np.zeros((0, 4), np.float32),
               "labels": np.zeros((0,), np.int32)}
    batch = next(batching.train_batches([example], 1, 0, flip=False, max_instances=1))
    rounded = np.resize([0, 0, 0, 2, 2, 128, 254, 255, 255], (4, 4, 3))
    np.testing.assert_array_equal(batch["image"], rounded[None].astype(np.uint8))
    assert batch["image"].dtype == np.uint8

    pixels = np.arange(256, dtype=np.uint8).reshape(4, 4, 16, 1).repeat(3, axis=-1)
    reference = pixels.astype(np.float32) * np.float32(1 / 255)
    on_device = jax.jit(batching.model_images)(jnp.asarray(pixels))
    assert on_device.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(on_device), reference)
    np.testing.assert_array_equal(batching.unit_range(pixels), reference)
    np.testing.assert_allclose(reference, pixels / 255.0, rtol=1e-7)
    floats = jnp.asarray(reference)
    assert batching.model_images(floats) is floats


# --------------------------------------------------------------------------- worker processes


def test_workers_give_the_same_batches_as_the_calling_thread(train_source):
    kwargs = dict(max_instances=MAX_INSTANCES, augmentation=augment.augmentation((0.7, 1.3), 0.3))
    in_thread = _take(batching.train_batches(train_source, 6, 4, start_step=2, **kwargs), 50)
    for workers in (1, 2):
        stream = batching.train_batches(train_source, 6, 4, start_step=2, num_workers=workers,
                                        **kwargs)
        _assert_batches_equal(in_thread, _take(stream, 50))
        stream.close()
    shares = [
        batching.train_batches(train_source, 6, 4, start_step=2, process_index=p,
                               process_count=2, num_workers=2, **kwargs)
        for p in range(2)
    ]
    taken = [_take(share, 8) for share in shares]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*taken)]
    _assert_batches_equal(in_thread[:8], joined)


def test_eval_with_workers_matches_the_calling_thread(validation_source):
    kwargs = dict(max_instances=MAX_INSTANCES)
    in_thread = list(batching.eval_batches(validation_source, 4, **kwargs))
    with_workers = batching.eval_batches(validation_source, 4, num_workers=2, **kwargs)
    _assert_batches_equal(in_thread, list(with_workers))


class _FailingSource:
    """Three good examples, then an error, as a broken file would raise it."""

    def __init__(self, source):
        self._source = source

    def __len__(self):
        return 6

    def __getitem__(self, index):
        if index >= 3:
            raise OSError(f"cannot read example {index}")
        return self._source[index]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_reading_error_reaches_the_consumer(validation_source, workers):
    stream = batching.eval_batches(_FailingSource(validation_source), 3,
                                   max_instances=MAX_INSTANCES, num_workers=workers)
    assert next(stream)["valid"].all()
    with pytest.raises(OSError, match="cannot read example 3"):
        next(stream)


def test_a_worker_copy_of_a_source_starts_with_an_empty_cache(train_source):
    train_source[0]
    copy = pickle.loads(pickle.dumps(train_source))
    assert len(copy) == len(train_source) and not any(copy._cache)
    np.testing.assert_array_equal(copy[0]["image"], train_source[0]["image"])


@pytest.mark.parametrize("workers, message", [(-1, "num_workers=-1"), (1.5, "num_workers=1.5")])
def test_bad_worker_counts_are_rejected(train_source, workers, message):
    with pytest.raises(ValueError, match="num_workers"):
        batching.train_batches(train_source, 4, 0, max_instances=2, num_workers=workers)
    with pytest.raises(ValueError, match=message):
        checks.num_workers_from_data_config(ml_collections.ConfigDict({"num_workers": workers}))
    automatic = ml_collections.ConfigDict({"num_workers": None})
    assert checks.num_workers_from_data_config(automatic) >= 1


def test_workers_run_outside_an_absl_app_and_the_program_exits_with_them_open(data_config):
    # grain 0.2.18 reads an absl flag when it starts workers with JAX loaded (grain#1355).
    script = (
        "import jax, ml_collections\n"
        "from jaxseg.data import batching, pipeline\n"
        f"config = ml_collections.ConfigDict({data_config.to_dict()!r})\n"
        "source = pipeline.load_split(config, 'train')\n"
        "batches = batching.train_batches(source, 4, 0, max_instances=6, num_workers=2)\n"
        "next(batches), next(batches)\n"
        "print('done')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"


def test_packed_masks_are_the_masks_bits_and_fields_select_what_is_made(train_source):
    whole = next(batching.train_batches(train_source, 4, 7, max_instances=MAX_INSTANCES))
    assert set(whole) == set(batching.FIELDS)
    assert whole["packed_masks"].shape == (4, MAX_INSTANCES, SIZE, SIZE // 8)
    np.testing.assert_array_equal(np.unpackbits(whole["packed_masks"], axis=-1), whole["masks"])
    np.testing.assert_array_equal(
        np.asarray(batching.unpack_masks(whole["packed_masks"], SIZE)), whole["masks"]
    )
    odd = np.zeros((1, 3, 11), np.uint8)
    odd[0, 1, [0, 7, 8, 10]] = 1  # 11 pixels: a second byte with 3 bits used
    unpacked = batching.unpack_masks(np.packbits(odd, axis=-1), 11)
    np.testing.assert_array_equal(np.asarray(unpacked), odd)
    fields = ("image", "packed_masks", "labels")
    some = next(batching.train_batches(train_source, 4, 7, max_instances=MAX_INSTANCES,
                                       fields=fields))
    assert set(some) == set(fields)
    for name in fields:
        np.testing.assert_array_equal(some[name], whole[name])
    with pytest.raises(ValueError, match="unknown batch fields \\['mask'\\]"):
        batching.eval_batches(train_source, 4, max_instances=2, fields=("mask",))
