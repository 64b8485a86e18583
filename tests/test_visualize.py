"""PNG pictures: palette, overlay pixels by hand, grid layout and training curves."""
import numpy as np
import pytest
from PIL import Image

from jaxseg import visualize

IGNORE = 255
MATPLOTLIB_FIRST_LINE_COLOUR = (0x1F, 0x77, 0xB4)


def read_png(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture.convert("RGB"))


def test_palette_background_black_known_colours_and_distinct():
    palette = visualize.class_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    # Bits of the class index spread over R, G, B from the most significant bit down.
    np.testing.assert_array_equal(palette[:9], [
        [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128],
        [128, 0, 128], [0, 128, 128], [128, 128, 128], [64, 0, 0]])
    np.testing.assert_array_equal(palette[9], [192, 0, 0])
    assert len({tuple(colour) for colour in palette}) == 300
    np.testing.assert_array_equal(visualize.class_palette(1), [[0, 0, 0]])


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, 1 << 25])
def test_palette_bad_size(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        visualize.class_palette(num_classes)


def hand_case():
    image = np.array([[[100, 100, 100], [0, 0, 0]],
                      [[254, 254, 254], [10, 20, 30]]], np.uint8)
    labels = np.array([[0, 1], [2, IGNORE]])
    palette = np.array([[0, 0, 0], [200, 0, 0], [0, 100, 50]], np.uint8)
    return image, labels, palette


def test_overlay_two_by_two_by_hand():
    image, labels, palette = hand_case()
    got = visualize.overlay(image, labels, alpha=0.5, palette=palette)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [
        [[100, 100, 100], [100, 0, 0]],   # background kept; 0.5·0 + 0.5·200
        [[127, 177, 152], [10, 20, 30]],  # 0.5·254 + 0.5·(0, 100, 50); ignored kept
    ])


def test_overlay_alpha_extremes_and_float_image():
    image, labels, palette = hand_case()
    np.testing.assert_array_equal(visualize.overlay(image, labels, alpha=0.0, palette=palette), image)
    opaque = visualize.overlay(image, labels, alpha=1.0, palette=palette)
    np.testing.assert_array_equal(opaque[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(opaque[1, 0], [0, 100, 50])
    float_image = np.full((2, 2, 3), 0.2)
    got = visualize.overlay(float_image, labels, alpha=0.25, palette=palette)
    np.testing.assert_array_equal(got[0, 0], [51, 51, 51])                    # 0.2·255
    np.testing.assert_array_equal(got[0, 1], [88, 38, 38])                    # 38.25 + 50 -> 88
    np.testing.assert_array_equal(got[1, 0], np.rint([38.25, 63.25, 50.75]))  # + 0.25·(0, 100, 50)


def test_overlay_default_palette_covers_labels():
    image = np.zeros((1, 3, 3), np.uint8)
    got = visualize.overlay(image, np.array([[0, 3, IGNORE]]), alpha=1.0)
    np.testing.assert_array_equal(got[0], [[0, 0, 0], [128, 128, 0], [0, 0, 0]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(label_map=np.array([[0, 3], [0, 0]])), r"outside \[0, 3\).*\[3\]"),
    (dict(label_map=np.array([[0, -1], [0, 0]])), r"\[-1\]"),
    (dict(label_map=np.zeros((2, 3), int)), "label_map shape"),
    (dict(label_map=np.zeros((2, 2))), "integer dtype"),
    (dict(image=np.zeros((2, 2), np.uint8)), r"image must have shape \[H, W, 3\]"),
    (dict(image=np.zeros((2, 2, 3), np.int64)), "uint8 or float"),
    (dict(alpha=1.5), "alpha"),
    (dict(palette=np.zeros((3, 4), np.uint8)), "palette"),
])
def test_overlay_bad_input(kwargs, message):
    image, labels, palette = hand_case()
    arguments = dict(image=image, label_map=labels, palette=palette) | kwargs
    with pytest.raises(ValueError, match=message):
        visualize.overlay(**arguments)


def test_save_overlay_png_round_trip(tmp_path):
    image, labels, palette = hand_case()
    path = tmp_path / "nested" / "overlay.png"
    visualize.save_overlay_png(path, image, labels, alpha=0.5, palette=palette)
    np.testing.assert_array_equal(read_png(path), [[[100, 100, 100], [100, 0, 0]],
                                                   [[127, 177, 152], [10, 20, 30]]])


def grid_inputs(num_rows=2, height=6, width=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_rows, height, width, 3), dtype=np.uint8)
    ground_truth = np.zeros((num_rows, height, width), np.int32)
    ground_truth[:, :3, :2] = 1
    predictions = np.zeros((num_rows, height, width), np.int32)
    predictions[:, 4:, 3:] = 2
    return images, ground_truth, predictions


def test_prediction_grid_layout_and_tiles(tmp_path):
    images, ground_truth, predictions = grid_inputs()
    path = tmp_path / "grid.png"
    visualize.save_prediction_grid(path, images, ground_truth, predictions, scale=3, alpha=1.0)
    picture = read_png(path)
    tile_h, tile_w, gap, text = 18, 15, 4, 20
    assert picture.shape == (text + 2 * (tile_h + gap), 3 * tile_w + 4 * gap, 3)
    row_top = text + (tile_h + gap)  # second example
    image_tile = picture[row_top:row_top + tile_h, gap:gap + tile_w]
    np.testing.assert_array_equal(image_tile, np.repeat(np.repeat(images[1], 3, 0), 3, 1))
    truth_left = gap + (tile_w + gap)
    np.testing.assert_array_equal(picture[row_top, truth_left], [128, 0, 0])  # class 1, alpha 1
    np.testing.assert_array_equal(picture[row_top + tile_h - 1, truth_left + tile_w - 1],
                                  images[1, -1, -1])  # background keeps the image
    prediction_left = gap + 2 * (tile_w + gap)
    np.testing.assert_array_equal(picture[row_top + tile_h - 1, prediction_left + tile_w - 1], [0, 128, 0])
    np.testing.assert_array_equal(picture[row_top, prediction_left], images[1, 0, 0])
    np.testing.assert_array_equal(picture[row_top - 1, :], 255)  # gap between rows is white
    assert np.any(picture[:text] < 128)  # column titles drawn


def test_prediction_grid_with_class_names_adds_legend(tmp_path):
    images, ground_truth, predictions = grid_inputs(num_rows=1, height=32, width=32)
    path = tmp_path / "grid.png"
    visualize.save_prediction_grid(path, images.astype(np.float32) / 255.0, ground_truth, predictions,
                                   class_names=["bg", "a", "b"])
    picture = read_png(path)
    base_height = 20 + (64 + 4)
    assert picture.shape == (base_height + 20, 3 * 64 + 4 * 4, 3)
    legend = picture[base_height:]
    for colour in ([128, 0, 0], [0, 128, 0]):
        assert np.any(np.all(legend == colour, axis=-1)), colour


def test_prediction_grid_bad_input(tmp_path):
    images, ground_truth, predictions = grid_inputs()
    path = tmp_path / "grid.png"
    with pytest.raises(ValueError, match="ground_truth shape"):
        visualize.save_prediction_grid(path, images, ground_truth[:1], predictions)
    with pytest.raises(ValueError, match="predictions shape"):
        visualize.save_prediction_grid(path, images, ground_truth, predictions[..., :2])
    with pytest.raises(ValueError, match="images"):
        visualize.save_prediction_grid(path, images[:0], ground_truth[:0], predictions[:0])
    with pytest.raises(ValueError, match="scale"):
        visualize.save_prediction_grid(path, images, ground_truth, predictions, scale=0)
    with pytest.raises(ValueError, match="class_names"):
        visualize.save_prediction_grid(path, images, ground_truth, predictions, class_names=[])
    with pytest.raises(ValueError, match="outside"):
        visualize.save_prediction_grid(path, images, ground_truth, predictions, class_names=["bg", "a"])
    assert not path.exists()


def test_training_curves_one_subplot_per_metric(tmp_path):
    history = {
        "train_loss": [(step, 1.0 / (step + 1)) for step in range(0, 200, 10)],
        "val_miou": [(50, 0.4), (100, 0.7), (150, 0.9)],
        "not_yet": [],
    }
    path = tmp_path / "curves" / "training.png"
    visualize.save_training_curves(path, history)
    picture = read_png(path)
    assert picture.shape == (3 * 250, 600, 3)
    is_line = np.all(picture == MATPLOTLIB_FIRST_LINE_COLOUR, axis=-1)
    bands = [is_line[250 * i:250 * (i + 1)].sum() for i in range(3)]
    assert bands[0] > 50 and bands[1] > 50 and bands[2] == 0


@pytest.mark.parametrize("history, message", [
    ({}, "at least one metric"),
    ({"loss": [1.0, 2.0]}, r"history\['loss'\]"),
    ({"loss": [(1, 2, 3)]}, r"history\['loss'\]"),
    ({"loss": [(1, 2), (3,)]}, r"history\['loss'\]"),
    ({"loss": [("a", "b")]}, r"history\['loss'\]"),
])
def test_training_curves_bad_history(tmp_path, history, message):
    with pytest.raises(ValueError, match=message):
        visualize.save_training_curves(tmp_path / "x.png", history)
