"""Training augmentations (jaxseg.data.augment) and their place in the input pipeline."""

import os

import jax
import numpy as np
import pytest

from jaxseg import config_files, sharding, train
from jaxseg.data import augment, batching

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
SIZE = 16


def _ramp_example(masks, labels):
    """A 4x4 example: image[y, x, c] = 10 y + x + 100 c, semantic[y, x] = 4 y + x."""
    rows, columns = np.mgrid[:4, :4]
    image = (10 * rows + columns)[..., None] + 100 * np.arange(3)
    masks = np.asarray(masks, np.uint8).reshape(-1, 4, 4)
    return {
        "image": image.astype(np.uint8),
        "semantic": (4 * rows + columns).astype(np.int32),
        "masks": masks,
        "boxes": np.zeros((len(masks), 4), np.float32),
        "labels": np.asarray(labels, np.int32),
    }


def _mask(*pixels):
    mask = np.zeros((4, 4), np.uint8)
    for row, column in pixels:
        mask[row, column] = 1
    return mask


def _tight_box(mask):
    rows, columns = np.nonzero(mask)
    return [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


def test_scale_2_crops_at_the_offset():
    example = _ramp_example(
        [_mask((0, 2), (0, 3), (1, 2), (1, 3)), _mask((3, 0)), _mask((2, 3))], [1, 2, 3]
    )
    scaled = augment.scale_example(example, 2.0, (1, 4), ignore_label=255)

    # 4 -> 8 pixels. Output i shows scaled pixel k = i + offset; nearest source floor(k / 2):
    # rows k = 1..4 -> 0, 1, 1, 2; columns k = 4..7 -> 2, 2, 3, 3.
    np.testing.assert_array_equal(
        scaled["semantic"], [[2, 2, 3, 3], [6, 6, 7, 7], [6, 6, 7, 7], [10, 10, 11, 11]]
    )
    # Bilinear source coordinate k / 2 - 1/4, clamped to [0, 3]: a linear ramp stays linear.
    row_coordinates = np.array([0.25, 0.75, 1.25, 1.75])
    column_coordinates = np.array([1.75, 2.25, 2.75, 3.0])
    expected = 10 * row_coordinates[:, None] + column_coordinates[None, :]
    expected = expected[..., None] + 100 * np.arange(3)
    assert scaled["image"].dtype == np.float32
    np.testing.assert_allclose(scaled["image"], expected, atol=1e-4)
    # Instance 2's pixel is on source row 3, which no output row samples: dropped.
    first = np.zeros((4, 4), np.uint8)
    first[0:3, :] = 1
    third = np.zeros((4, 4), np.uint8)
    third[3, 2:4] = 1
    np.testing.assert_array_equal(scaled["masks"], [first, third])
    np.testing.assert_array_equal(scaled["boxes"], [[0, 0, 4, 3], [2, 3, 4, 4]])
    np.testing.assert_array_equal(scaled["labels"], [1, 3])
    assert scaled["boxes"].dtype == np.float32 and scaled["labels"].dtype == np.int32


def test_scale_half_pads_bottom_and_right():
    example = _ramp_example([_mask((0, 0)), _mask((2, 1), (3, 1))], [2, 1])
    scaled = augment.scale_example(example, 0.5, (0, 0), ignore_label=9)

    # 4 -> 2 pixels: nearest source 2k + 1, bilinear source 2k + 1/2 (the 2x2 block mean).
    semantic = np.full((4, 4), 9)
    semantic[:2, :2] = [[5, 7], [13, 15]]
    np.testing.assert_array_equal(scaled["semantic"], semantic)
    image = np.zeros((4, 4, 3))
    coordinates = np.array([0.5, 2.5])
    image[:2, :2] = (10 * coordinates[:, None] + coordinates)[..., None] + 100 * np.arange(3)
    np.testing.assert_allclose(scaled["image"], image, atol=1e-4)
    second = np.zeros((4, 4), np.uint8)
    second[1, 0] = 1
    np.testing.assert_array_equal(scaled["masks"], [second])
    np.testing.assert_array_equal(scaled["boxes"], [[0, 1, 1, 2]])
    np.testing.assert_array_equal(scaled["labels"], [1])


def test_scale_1_is_the_identity_on_tight_boxes():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 4, 4)) < 0.4).astype(np.uint8)
    masks[:, 1, 1] = 1
    example = _ramp_example(masks, [1, 2, 3])
    example["boxes"] = np.array([_tight_box(m) for m in masks], np.float32)
    scaled = augment.scale_example(example, 1.0, (0, 0), ignore_label=255)
    for name in example:
        np.testing.assert_array_equal(scaled[name], example[name], err_msg=name)


def test_scaled_sizes_round_half_up():
    assert [augment.scaled_size(10, f) for f in (0.75, 0.749, 1.25, 0.01)] == [8, 7, 13, 1]


def _random_example(rng, count):
    masks = np.zeros((count, SIZE, SIZE), np.uint8)
    for mask in masks:
        top, left = rng.integers(0, SIZE - 2, 2)
        height, width = rng.integers(1, 6, 2)
        mask[top : top + height, left : left + width] = 1
    return {
        "image": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        "semantic": rng.integers(0, 4, (SIZE, SIZE)).astype(np.int32),
        "masks": masks,
        "boxes": np.array([_tight_box(m) for m in masks], np.float32).reshape(-1, 4),
        "labels": np.arange(1, count + 1, dtype=np.int32),
    }


def test_random_scale_keeps_exact_boxes_and_drops_only_empty_instances():
    rng = np.random.default_rng(1)
    config = augment.augmentation(scale_jitter=(0.5, 2.0))
    dropped = 0
    for _ in range(30):
        example = _random_example(rng, 5)
        scaled = augment.augment(example, rng, config)
        assert scaled["image"].shape == (SIZE, SIZE, 3)
        assert scaled["semantic"].shape == (SIZE, SIZE) and scaled["semantic"].dtype == np.int32
        for mask, box in zip(scaled["masks"], scaled["boxes"], strict=True):
            assert mask.any()
            np.testing.assert_array_equal(box, _tight_box(mask))
        dropped += 5 - len(scaled["labels"])
        assert set(scaled["labels"]) <= set(example["labels"])
    assert dropped > 0  # factors up to 2 crop some instances away


def _color_jitter_reference(image, brightness, contrast, saturation):
    """The module docstring's definition, pixel by pixel in float64."""
    pixels = image.astype(np.float64).reshape(-1, 3)

    def gray(pixel):
        return 0.299 * pixel[0] + 0.587 * pixel[1] + 0.114 * pixel[2]

    pixels = np.array([np.clip(brightness * p, 0, 255) for p in pixels])
    mean = sum(gray(p) for p in pixels) / len(pixels)
    pixels = np.array([np.clip(contrast * p + (1 - contrast) * mean, 0, 255) for p in pixels])
    pixels = np.array(
        [np.clip(saturation * p + (1 - saturation) * gray(p), 0, 255) for p in pixels]
    )
    return pixels.reshape(image.shape)


@pytest.mark.parametrize(
    "factors", [(1.0, 1.0, 1.0), (1.3, 0.7, 1.2), (0.6, 1.4, 0.5), (1.9, 1.8, 1.7)]
)
def test_color_jitter_matches_the_formula(factors):
    image = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    jittered = augment.color_jitter(image, *factors)
    assert jittered.dtype == np.float32 and jittered.shape == image.shape
    np.testing.assert_allclose(jittered, _color_jitter_reference(image, *factors), atol=2e-3)


def test_color_jitter_hand_computed():
    # One gray pixel and one red pixel; brightness 2 clips red at 255.
    image = np.array([[[100, 100, 100], [200, 0, 0]]], np.uint8)
    # Brightness 2: (200, 200, 200), (255, 0, 0); grays 200 and 76.245, mean 138.1225.
    # Contrast 1 and saturation 0: every pixel becomes its gray.
    jittered = augment.color_jitter(image, 2.0, 1.0, 0.0)
    np.testing.assert_allclose(jittered, [[[200] * 3, [76.245] * 3]], atol=1e-3)
    # Contrast 0: every pixel becomes the mean gray.
    jittered = augment.color_jitter(image, 2.0, 0.0, 1.0)
    np.testing.assert_allclose(jittered, np.full((1, 2, 3), 138.1225), atol=1e-3)


def test_augment_draws_color_factors_in_range_only_for_the_image():
    example = _random_example(np.random.default_rng(3), 2)
    config = augment.augmentation(color_jitter=0.3)
    jittered = augment.augment(example, np.random.default_rng(4), config)
    factors = np.random.default_rng(4).uniform(0.7, 1.3, 3)
    np.testing.assert_allclose(jittered["image"], augment.color_jitter(example["image"], *factors))
    for name in ("semantic", "masks", "boxes", "labels"):
        assert jittered[name] is example[name]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale_jitter": (1.25, 0.8)}, "scale_jitter=(1.25, 0.8) must be None or"),
        ({"scale_jitter": (0.0, 1.0)}, "scale_jitter="),
        ({"scale_jitter": (1.0,)}, "scale_jitter="),
        ({"scale_jitter": "big"}, "scale_jitter="),
        ({"scale_jitter": (0.5, float("inf"))}, "scale_jitter="),
        ({"color_jitter": -0.1}, "color_jitter=-0.1 must be a number in [0, 1]"),
        ({"color_jitter": 1.5}, "color_jitter="),
        ({"color_jitter": True}, "color_jitter="),
        ({"ignore_label": -1}, "ignore_label=-1"),
    ],
)
def test_invalid_augmentation_names_the_argument(kwargs, message):
    with pytest.raises(ValueError) as error:
        augment.augmentation(**kwargs)
    assert str(error.value).startswith(message)


def test_augmentation_switches():
    assert not augment.augmentation().enabled
    assert augment.augmentation(scale_jitter=[1, 2]).scale_jitter == (1.0, 2.0)
    assert augment.augmentation(color_jitter=0.1).enabled


# --------------------------------------------------------------------------- in the pipeline

AUGMENTED = augment.augmentation(scale_jitter=(0.6, 1.6), color_jitter=0.4)


@pytest.fixture(scope="module")
def source():
    """In-memory stand-in of a decoded split (random access to decoded examples)."""
    rng = np.random.default_rng(5)
    return [_random_example(rng, int(rng.integers(0, 4))) for _ in range(10)]


def _batches(source, count, **kwargs):
    stream = batching.train_batches(source, 4, max_instances=4, **kwargs)
    return [next(stream) for _ in range(count)]


def _assert_same(first, second):
    for a, b in zip(first, second, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_augmented_batches_are_a_function_of_seed_and_step(source):
    straight = _batches(source, 6, seed=7, augmentation=AUGMENTED)
    _assert_same(straight, _batches(source, 6, seed=7, augmentation=AUGMENTED))
    _assert_same(straight[2:], _batches(source, 4, seed=7, start_step=2, augmentation=AUGMENTED))
    shares = [
        _batches(source, 6, seed=7, augmentation=AUGMENTED, process_index=p, process_count=2)
        for p in range(2)
    ]
    for whole, first, second in zip(straight, *shares, strict=True):
        for name in whole:
            np.testing.assert_array_equal(whole[name], np.concatenate([first[name], second[name]]))
    other_seed = _batches(source, 1, seed=8, augmentation=AUGMENTED)[0]
    assert not np.array_equal(other_seed["image"], straight[0]["image"])


def test_augmented_batches_keep_fields_consistent(source):
    for batch in _batches(source, 5, seed=1, augmentation=AUGMENTED):
        assert batch["image"].dtype == np.uint8
        for row in range(4):
            valid = batch["instance_valid"][row]
            assert not batch["masks"][row][~valid].any()
            for mask, box in zip(
                batch["masks"][row][valid], batch["boxes"][row][valid], strict=True
            ):
                np.testing.assert_array_equal(box, _tight_box(mask))


def test_half_scale_pads_every_training_example(source):
    halving = augment.augmentation(scale_jitter=(0.5, 0.5))
    for batch in _batches(source, 3, seed=2, flip=False, augmentation=halving):
        half = SIZE // 2
        assert (batch["semantic"][:, half:] == 255).all()
        assert (batch["semantic"][:, :, half:] == 255).all()
        assert not batch["image"][:, half:].any() and not batch["image"][:, :, half:].any()
        assert not batch["masks"][:, :, half:].any() and not batch["masks"][:, :, :, half:].any()
        for row, index in enumerate(batch["index"]):
            expected = source[index]["semantic"][1::2, 1::2]
            np.testing.assert_array_equal(batch["semantic"][row, :half, :half], expected)


def test_augmentation_off_leaves_batches_unchanged(source):
    off = augment.augmentation()
    _assert_same(_batches(source, 4, seed=3), _batches(source, 4, seed=3, augmentation=off))
    batch = _batches(source, 1, seed=3, flip=False)[0]
    for row, index in enumerate(batch["index"]):
        np.testing.assert_array_equal(batch["image"][row], source[index]["image"])


def test_eval_batches_are_not_augmented(source):
    for batch in batching.eval_batches(source, 4, max_instances=4):
        for row, index in enumerate(batch["index"]):
            if index < 0:
                continue
            np.testing.assert_array_equal(batch["image"][row], source[index]["image"])
            np.testing.assert_array_equal(batch["semantic"][row], source[index]["semantic"])


def test_training_loop_batches_follow_the_data_config(source):
    config = config_files.load_config_file(os.path.join(CONFIG_DIR, "unet_shapes.py"))
    config.data.scale_jitter = (0.7, 1.4)
    config.data.color_jitter = 0.25
    expected = batching.train_batches(
        source,
        config.batch_size,
        config.seed,
        3,
        augmentation=augment.augmentation((0.7, 1.4), 0.25, 255),
        max_instances=config.data.max_instances,
    )
    mesh = sharding.create_mesh(jax.devices())
    loop = train.device_batches(config, source, 3, ("image", "semantic"), mesh)
    _assert_same([next(loop) for _ in range(3)], [next(expected) for _ in range(3)])
