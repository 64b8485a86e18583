"""Tests of the procedural shapes dataset and its TFDS builder (jaxseg.data.shapes)."""
import hashlib
import math
import pickle

import numpy as np
import pytest

from jaxseg.data import shapes, shapes_render

TINY = dict(
    image_size=32,
    num_train=20,
    num_validation=6,
    num_test=4,
    min_object_size=0.15,
    max_object_size=0.6,
    min_visible_pixels=4,
    empty_fraction=0.15,
)


class ScriptedRng:
    """Stands in for np.random.Generator: `uniform`/`random` return scripted values."""

    def __init__(self, *values):
        self._values = list(values)

    def uniform(self, low=0.0, high=1.0, size=None):
        value = self._values.pop(0)
        return np.full(size, value) if size is not None else value

    def random(self):
        return self._values.pop(0)


def _records(builder, split):
    source = builder.as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def _digest(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A TFDS data directory holding the TINY dataset."""
    root = tmp_path_factory.mktemp("tfds")
    shapes.prepare_shapes(shapes.shapes_config(**TINY), root)
    return root


@pytest.fixture
def tiny_builder(tiny_root):
    return shapes.prepare_shapes(shapes.shapes_config(**TINY), tiny_root, build=False)


def test_two_builds_write_identical_files(tiny_builder, tmp_path):
    again = shapes.prepare_shapes(shapes.shapes_config(**TINY), tmp_path)
    first = sorted(p for p in tiny_builder.data_path.iterdir() if "array_record" in p.name)
    second = sorted(p for p in again.data_path.iterdir() if "array_record" in p.name)
    assert [p.name for p in first] == [p.name for p in second]
    assert len(first) == 3
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()


def test_stored_examples_are_the_generated_ones(tiny_builder):
    config = tiny_builder.builder_config
    for split, count in config.split_sizes().items():
        records = _records(tiny_builder, split)
        assert len(records) == count
        stored = {_digest(r["image"]): r for r in records}
        for index in range(count):
            expected = shapes.generate_example(config, split, index)
            record = stored[_digest(expected["image"])]
            np.testing.assert_array_equal(record["semantic"][..., 0], expected["semantic"])
            np.testing.assert_array_equal(record["instance_ids"][..., 0], expected["instance_ids"])
            np.testing.assert_array_equal(record["boxes"].reshape(-1, 4), expected["boxes"])
            np.testing.assert_array_equal(record["labels"], expected["labels"])


def test_splits_and_seeds_give_different_images():
    config = shapes.shapes_config(**TINY)
    images = {
        _digest(shapes.generate_example(config, split, i)["image"])
        for split in shapes.SPLITS
        for i in range(5)
    }
    assert len(images) == 15
    reseeded = shapes.shapes_config(**TINY, seed=1)
    assert not np.array_equal(
        shapes.generate_example(config, "train", 0)["image"],
        shapes.generate_example(reseeded, "train", 0)["image"],
    )
    np.testing.assert_array_equal(
        shapes.generate_example(config, "train", 3)["image"],
        shapes.generate_example(config, "train", 3)["image"],
    )


def _independent_tight_box(mask):
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


@pytest.mark.parametrize("size", [32, 64])
def test_examples_are_self_consistent(size):
    config = shapes.shapes_config(**{**TINY, "image_size": size})
    empty = 0
    for index in range(120):
        example = shapes.generate_example(config, "train", index)
        image, semantic = example["image"], example["semantic"]
        ids, boxes, labels = example["instance_ids"], example["boxes"], example["labels"]
        n = len(labels)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert semantic.shape == ids.shape == (size, size)
        assert boxes.shape == (n, 4) and boxes.dtype == np.float32
        assert labels.dtype == np.int32 and set(labels.tolist()) <= {1, 2, 3}
        assert set(np.unique(ids).tolist()) <= set(range(n + 1))
        union = np.zeros((size, size), np.int64)
        for k in range(n):
            mask = ids == k + 1
            assert mask.sum() >= config.min_visible_pixels
            union[mask] = labels[k]
            np.testing.assert_array_equal(boxes[k], _independent_tight_box(mask))
        np.testing.assert_array_equal(semantic, union)
        empty += n == 0
        if n == 0:
            assert not semantic.any() and boxes.shape == (0, 4)
    assert 5 <= empty <= 40  # about 15% (empty_fraction) of 120


def test_later_shapes_occlude_and_hidden_or_tiny_shapes_are_dropped():
    size = 8
    sliver = np.zeros((size, size), bool)
    sliver[0:2, 0:7] = True  # 14 pixels, 5 of them (row 1, columns 1..5) under `bottom`
    bottom = np.zeros((size, size), bool)
    bottom[1:6, 1:6] = True  # 25 pixels, 9 of them under `top`
    top = np.zeros((size, size), bool)
    top[3:8, 3:8] = True  # 25 pixels, 9 of them under `last`
    covered = np.zeros((size, size), bool)
    covered[4:6, 4:6] = True  # entirely under `last`
    last = np.zeros((size, size), bool)
    last[4:7, 4:7] = True  # 9 pixels
    masks = [sliver, bottom, top, covered, last]
    kept, labels, ids = shapes_render.visible_instances(masks, [1, 2, 3, 1, 2], size, 4)
    assert labels == [1, 2, 3, 2] and len(kept) == 4
    assert [int((ids == k).sum()) for k in range(5)] == [64 - 9 - 16 - 16 - 9, 9, 16, 16, 9]
    assert ids[1, 1] == 2 and ids[3, 3] == 3 and ids[5, 5] == 4 and ids[1, 6] == 1


def test_dropped_shape_uncovers_the_one_beneath():
    size = 6
    bottom = np.zeros((size, size), bool)
    bottom[0:4, 0:4] = True
    speck = np.zeros((size, size), bool)
    speck[1:3, 1:2] = True  # 2 pixels on top of bottom, below the threshold
    kept, labels, ids = shapes_render.visible_instances([bottom, speck], [3, 1], size, 4)
    assert labels == [3] and len(kept) == 1
    np.testing.assert_array_equal(ids, bottom.astype(np.uint8))


def test_rasterized_shapes_match_their_geometry():
    size = 200
    rows, cols = shapes_render.pixel_centres(size)
    circle = shapes_render._circle_mask(None, rows, cols, (100.0, 100.0), 120.0)
    assert abs(circle.sum() / (math.pi * 60**2) - 1) < 0.01
    # long side 100 along columns, short side 0.5 * 100, angle 0 (random() = 0.9 > 0.5)
    rectangle = shapes_render._rectangle_mask(ScriptedRng(0.5, 0.9), rows, cols, (100.0, 100.0), 100.0)
    assert _independent_tight_box(rectangle) == [50, 75, 150, 125]
    assert rectangle.sum() == 100 * 50
    # equilateral triangle (base angle 0, no jitter) with circumradius 60
    triangle = shapes_render._triangle_mask(ScriptedRng(0.0, 0.0), rows, cols, (100.0, 100.0), 120.0)
    assert abs(triangle.sum() / (3 * math.sqrt(3) / 4 * 60**2) - 1) < 0.02
    assert triangle[100, 100] and not triangle[100, 30]


def test_small_rare_foreground_variant_is_small_and_rare():
    default = shapes.shapes_config(image_size=64)
    rare = shapes.shapes_config(image_size=64, **shapes.SMALL_RARE_FOREGROUND)

    def foreground_fraction(config):
        examples = [shapes.generate_example(config, "train", i) for i in range(60)]
        assert all(len(e["labels"]) <= config.max_shapes for e in examples)
        return np.mean([(e["semantic"] > 0).mean() for e in examples])

    assert foreground_fraction(rare) < 0.03 < foreground_fraction(default)


def test_config_names_encode_parameters():
    assert shapes.shapes_config() is shapes.Shapes.BUILDER_CONFIGS[0]
    assert shapes.shapes_config(**shapes.SMALL_RARE_FOREGROUND) is shapes.Shapes.BUILDER_CONFIGS[1]
    names = {
        shapes.shapes_config(**overrides).name
        for overrides in (
            {}, {"image_size": 64}, {"num_train": 10}, {"max_shapes": 3},
            {"max_object_size": 0.3}, {"empty_fraction": 0.1}, {"seed": 2},
            {"min_visible_pixels": 3},
        )
    }
    assert len(names) == 8
    assert shapes.shapes_config(image_size=64).image_size == 64


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": 64.0}, "image_size"),
        ({"image_size": "128"}, "image_size"),
        ({"num_train": 0}, "num_train"),
        ({"min_shapes": 4, "max_shapes": 2}, "min_shapes"),
        ({"max_shapes": 300}, "max_shapes"),
        ({"min_object_size": 0.0}, "min_object_size"),
        ({"min_object_size": 0.5, "max_object_size": 0.2}, "max_object_size"),
        ({"empty_fraction": 1.5}, "empty_fraction"),
        ({"min_visible_pixels": 0}, "min_visible_pixels"),
        ({"seed": -1}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_parameters_are_named(overrides, field):
    with pytest.raises(ValueError, match=field):
        shapes.shapes_config(**overrides)


def test_builders_of_predefined_and_custom_configs_survive_pickling(tmp_path):
    # An input worker gets its copy of the source (and its builder) by pickling; TFDS
    # refuses a config equal to, but not the same object as, a predefined one.
    predefined, custom = shapes.shapes_config(), shapes.shapes_config(image_size=32)
    assert pickle.loads(pickle.dumps(predefined)) is predefined
    copy = pickle.loads(pickle.dumps(custom))
    assert copy.name == custom.name and copy.image_size == 32
    for config in (predefined, custom):
        builder = shapes.Shapes(config=config, data_dir=str(tmp_path))
        assert pickle.loads(pickle.dumps(builder)).builder_config.name == config.name


def test_generate_example_rejects_bad_split_and_index():
    config = shapes.shapes_config(**TINY)
    with pytest.raises(ValueError, match="split"):
        shapes.generate_example(config, "dev", 0)
    with pytest.raises(ValueError, match="index"):
        shapes.generate_example(config, "train", -1)


def test_non_building_process_waits_then_opens(tiny_root, tmp_path):
    config = shapes.shapes_config(**TINY)
    with pytest.raises(TimeoutError, match="process 0"):
        shapes.prepare_shapes(
            config, tmp_path, build=False, wait_timeout_s=0.2, poll_interval_s=0.05
        )
    assert not any(tmp_path.rglob("*.array_record*"))
    opened = shapes.prepare_shapes(config, tiny_root, build=False, wait_timeout_s=0.2)
    assert opened.is_prepared()
    assert len(opened.as_data_source(split="test")) == TINY["num_test"]
