"""PNG pictures: palette, overlay pixels by hand, grid layout and training curves."""
import numpy as np
import pytest
from PIL import Image, ImageFont

from jaxseg import training_curves, visualize

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


def random_labels(seed, shape, num_classes, ignored_fraction=0.1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape)
    labels[rng.random(shape) < ignored_fraction] = IGNORE
    return labels


def test_colour_label_map_is_the_opaque_palette_colour():
    labels = random_labels(1, (7, 9), 4)
    palette = visualize.class_palette(4)
    got = visualize.colour_label_map(labels, palette)
    assert got.shape == (7, 9, 3) and got.dtype == np.uint8
    expected = np.array(palette)[np.where(labels == IGNORE, 0, labels)]
    expected[labels == IGNORE] = (224, 224, 192)
    np.testing.assert_array_equal(got, expected)
    assert (labels == IGNORE).any() and (labels == 0).any()
    np.testing.assert_array_equal(got[labels == 0], 0)  # background stays black, opaque
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*\[3\]"):
        visualize.colour_label_map(labels, palette[:3])


def test_error_map_marks_exactly_the_wrong_pixels():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    truth = random_labels(3, (8, 10), 3, ignored_fraction=0.2)
    prediction = rng.integers(0, 3, (8, 10))
    got = visualize.error_map(image, truth, prediction)
    ignored = truth == IGNORE
    wrong = (prediction != truth) & ~ignored
    assert ignored.any() and wrong.any() and (~wrong & ~ignored).any()
    grey = np.rint(0.4 * (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]))
    expected = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    expected[wrong] = (255, 0, 0)
    expected[ignored] = (224, 224, 192)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.all(got == (255, 0, 0), axis=-1), wrong)
    assert not np.any(np.all(visualize.error_map(image, truth, truth) == (255, 0, 0), axis=-1))


def test_legend_entries_list_only_the_classes_drawn():
    palette = visualize.class_palette(8)
    names = [f"c{k}" for k in range(8)]
    truth = np.array([[0, 5], [5, IGNORE]])
    prediction = np.array([[[2, 0, 0]]])
    assert visualize.legend_entries([truth, prediction], palette, names) == [
        ("c0", (0, 0, 0)), ("c2", (0, 128, 0)), ("c5", (128, 0, 128)), ("ignored", (224, 224, 192))]
    assert visualize.legend_entries([prediction], palette) == [("0", (0, 0, 0)), ("2", (0, 128, 0))]
    with pytest.raises(ValueError, match="outside"):
        visualize.legend_entries([truth], palette, names, ignore_label=None)


def strip_colours(strip):
    """Counts of each non-grey colour in a legend strip (text is grey, swatch outlines black)."""
    pixels = strip.reshape(-1, 3)
    coloured = pixels[~((pixels[:, 0] == pixels[:, 1]) & (pixels[:, 1] == pixels[:, 2]))]
    colours, counts = np.unique(coloured, axis=0, return_counts=True)
    return {tuple(int(c) for c in colour): int(count) for colour, count in zip(colours, counts)}


def test_add_legend_appends_a_strip_with_the_entries_colours():
    picture = np.random.default_rng(4).integers(0, 256, (30, 200, 3), dtype=np.uint8)
    entries = [("a", (10, 20, 30)), ("bb", (200, 0, 100)), ("black", (0, 0, 0))]
    got = visualize.add_legend(picture, entries)
    assert got.shape == (30 + 20, 200, 3)
    np.testing.assert_array_equal(got[:30], picture)
    # Each swatch: 12 x 12 with a black outline, so 10 x 10 pixels of the entry's colour.
    assert strip_colours(got[30:]) == {(10, 20, 30): 100, (200, 0, 100): 100}
    np.testing.assert_array_equal(got[30 + 5:30 + 15, 5:15], np.full((10, 10, 3), (10, 20, 30)))
    swatch_rows = got[30 + 4:30 + 16]
    assert np.sum(np.all(swatch_rows == 0, axis=-1)) >= 144 + 2 * 44  # one filled, two outlines
    captioned = visualize.add_legend(picture[:, :60], entries, caption="one two three four five six")
    assert captioned.shape[0] > 30 + 20 * 3 and captioned.shape[1] == 60
    np.testing.assert_array_equal(captioned[:30], picture[:, :60])
    assert np.any(captioned[-20:] < 128)  # the caption's last line
    widened = visualize.add_legend(picture[:, :10], [("a long class name", (10, 20, 30))])
    assert widened.shape[1] > 10 and np.all(widened[:30, 10:] == 255)
    np.testing.assert_array_equal(visualize.add_legend(picture, []), picture)


def test_wrap_text_fits_the_width_and_keeps_no_break_spaces():
    font = ImageFont.load_default()
    text = "errors panel: red = wrong pixel, dimmed image = right pixel"
    lines = visualize.wrap_text(text, font, 120)
    assert len(lines) > 1 and " ".join(lines) == text
    assert all(font.getlength(line) <= 120 for line in lines)
    assert visualize.wrap_text("a b\u00a0>=\u00a00.5", font, 1) == ["a", "b >= 0.5"]


def grid_inputs(num_rows=2, height=6, width=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_rows, height, width, 3), dtype=np.uint8)
    ground_truth = np.zeros((num_rows, height, width), np.int32)
    ground_truth[:, :3, :2] = 1
    ground_truth[-1, 0, 4] = IGNORE
    predictions = np.zeros((num_rows, height, width), np.int32)
    predictions[:, 4:, 3:] = 2
    predictions[:, 0, :2] = 1
    return images, ground_truth, predictions


def test_prediction_grid_layout_and_tiles(tmp_path):
    images, ground_truth, predictions = grid_inputs(width=32)
    path = tmp_path / "grid.png"
    visualize.save_prediction_grid(path, images, ground_truth, predictions, scale=4)
    picture = read_png(path)
    tile_h, tile_w, gap, text = 24, 128, 4, 20
    # One legend row and one caption line (the grid is 532 pixels wide).
    assert picture.shape == (text + 2 * (tile_h + gap) + 2 * text, 4 * tile_w + 5 * gap, 3)
    palette = visualize.class_palette(3)
    for row in range(2):
        top = text + row * (tile_h + gap)
        truth, prediction = ground_truth[row], predictions[row]
        ignored = truth == IGNORE
        truth_colours = palette[np.where(ignored, 0, truth)]
        truth_colours[ignored] = (224, 224, 192)
        grey = np.rint(0.4 * images[row].astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8)
        errors = np.repeat(grey[..., None], 3, axis=-1)
        errors[(prediction != truth) & ~ignored] = (255, 0, 0)
        errors[ignored] = (224, 224, 192)
        expected = (images[row], truth_colours, palette[prediction], errors)
        for column, tile in enumerate(expected):
            left = gap + column * (tile_w + gap)
            np.testing.assert_array_equal(picture[top:top + tile_h, left:left + tile_w],
                                          np.repeat(np.repeat(tile, 4, 0), 4, 1), err_msg=str(column))
        np.testing.assert_array_equal(picture[top - 1, :], 255)  # gap above each row is white
    assert np.any(picture[:text] < 128)  # column titles drawn
    legend = picture[text + 2 * (tile_h + gap):]
    assert set(strip_colours(legend)) == {(128, 0, 0), (0, 128, 0), (224, 224, 192)}
    assert np.sum(np.all(legend[:text] == 0, axis=-1)) > 144  # background's black swatch


def test_prediction_grid_legend_lists_only_drawn_classes(tmp_path):
    images, ground_truth, predictions = grid_inputs(num_rows=1, height=32, width=32)
    path = tmp_path / "grid.png"
    names = ["bg", "a", "b", "c", "d"]
    visualize.save_prediction_grid(path, images.astype(np.float32) / 255.0, ground_truth, predictions,
                                   class_names=names)
    picture = read_png(path)
    base_height = 20 + (64 + 4)
    assert picture.shape[1] == 4 * 64 + 5 * 4 and picture.shape[0] > base_height + 20
    # Classes 3 (128, 128, 0) and 4 (0, 0, 128) are named but drawn nowhere; one pixel is ignored.
    assert set(strip_colours(picture[base_height:])) == {(128, 0, 0), (0, 128, 0), (224, 224, 192)}
    predicted_only = np.where(predictions == 2, 4, predictions)
    ground_truth[ground_truth == IGNORE] = 0
    visualize.save_prediction_grid(path, images, ground_truth, predicted_only, class_names=names)
    assert set(strip_colours(read_png(path)[base_height:])) == {(128, 0, 0), (0, 0, 128)}


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
    training_curves.save_training_curves(path, history)
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
        training_curves.save_training_curves(tmp_path / "x.png", history)
