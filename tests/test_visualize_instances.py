"""Instance pictures (jaxseg.visualize_instances): blended masks, outlines, labels, grid layout."""
import numpy as np
import pytest
from PIL import Image

from jaxseg.visualize import class_palette
from jaxseg.visualize_instances import (draw_instances, empty_panel_text, instance_colours,
                                        save_instance_grid)

CLASS_NAMES = ("background", "circle", "rectangle", "triangle")
SIZE = 96


def random_image(seed=0, size=SIZE):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def two_instances():
    """Boxes (x1, y1, x2, y2) with full masks: one in the middle, one lower right."""
    boxes = np.array([[20, 30, 60, 70], [70, 75, 90, 95]], np.float32)
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[0, 30:70, 20:60] = True
    masks[1, 75:95, 70:90] = True
    return boxes, masks


def blend(pixel, colour, alpha=0.5):
    return np.rint((1 - alpha) * pixel.astype(float) + alpha * colour.astype(float)).astype(np.uint8)


def test_instance_colours_are_distinct_and_not_black():
    colours = instance_colours(100)
    assert colours.shape == (100, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 100 and not np.any(np.all(colours == 0, axis=1))
    np.testing.assert_array_equal(colours[:2], class_palette(3)[1:])


def test_draw_instances_masks_outlines_and_untouched_pixels():
    image = random_image()
    boxes, masks = two_instances()
    picture = draw_instances(image, boxes, np.array([0.9, 0.6]), np.array([1, 3]), masks,
                             np.array([True, True]), CLASS_NAMES)
    assert picture.shape == image.shape and picture.dtype == np.uint8
    first, second = instance_colours(2)
    # Inside each mask, away from outlines and labels: blended with its own colour.
    np.testing.assert_array_equal(picture[50, 40], blend(image[50, 40], first))
    np.testing.assert_array_equal(picture[85, 80], blend(image[85, 80], second))
    # (Rows 61..74 hold the second label, shifted left to stay inside the image.)
    np.testing.assert_array_equal(picture[31:61, 21:59], blend(image[31:61, 21:59], first))
    assert np.all(picture[74, 35] == second)
    # Outlines: inclusive corners (x1, y1) and (x2 - 1, y2 - 1).
    np.testing.assert_array_equal(picture[50, 20], first)
    np.testing.assert_array_equal(picture[50, 59], first)
    np.testing.assert_array_equal(picture[69, 25], first)
    np.testing.assert_array_equal(picture[85, 89], second)
    # Far from every instance and label: the image's own pixels.
    np.testing.assert_array_equal(picture[:10, 65:], image[:10, 65:])
    np.testing.assert_array_equal(picture[35:60, 62:], image[35:60, 62:])
    np.testing.assert_array_equal(picture[72:, :15], image[72:, :15])
    # The label "circle 0.90" (12 rows high) sits just above the box: white text, anti-aliased
    # over the instance colour (128, 0, 0), so green equals blue on every label pixel.
    label = picture[18:30, 20:60].astype(int)
    assert np.all(label[..., 1] == label[..., 2]) and np.all(label[..., 0] >= label[..., 1])
    assert np.sum(np.all(label == first, axis=-1)) > 100 and np.sum(label.min(axis=-1) > 200) > 10
    np.testing.assert_array_equal(picture[:18, :65], image[:18, :65])
    np.testing.assert_array_equal(picture[18:30, 0:19], image[18:30, 0:19])
    faint = draw_instances(image, boxes, np.array([0.9, 0.6]), np.array([1, 3]), masks, None,
                           CLASS_NAMES, alpha=0.25)
    np.testing.assert_array_equal(faint[50, 40], blend(image[50, 40], first, alpha=0.25))


NOTE_ROWS = 28  # two lines of 13 pixels and 1-pixel padding above and below
ONE_LINE_NOTE_ROWS = 15


def assert_note_drawn(picture, image):
    """A black box with white text at the top-left corner; the rest is the image's own pixels."""
    np.testing.assert_array_equal(picture[NOTE_ROWS:], image[NOTE_ROWS:])
    note = picture[:NOTE_ROWS]
    text = note.min(axis=-1) > 200  # white, anti-aliased over black
    assert np.sum(np.all(note == 0, axis=-1)) > 500 and np.sum(text) > 20
    assert np.any(picture[NOTE_ROWS - 1] != image[NOTE_ROWS - 1])


def test_empty_panel_text_names_the_threshold():
    assert empty_panel_text(0.5) == "no detections with score\u00a0>=\u00a00.5"
    assert empty_panel_text(0.25) == "no detections with score\u00a0>=\u00a00.25"
    assert empty_panel_text(None) == "no objects"


def test_invalid_and_low_score_detections_are_not_drawn_and_the_panel_says_so():
    image = random_image(1)
    boxes, masks = two_instances()
    classes = np.array([1, 2])
    none_drawn = draw_instances(image, boxes, np.array([0.3, 0.9]), classes, masks,
                                np.array([True, False]), CLASS_NAMES)
    assert_note_drawn(none_drawn, image)
    lower_threshold = draw_instances(image, boxes, np.array([0.3, 0.9]), classes, masks,
                                     np.array([True, False]), CLASS_NAMES, score_threshold=0.3)
    first = instance_colours(1)[0]  # a score equal to the threshold is drawn
    np.testing.assert_array_equal(lower_threshold[50, 40], blend(image[50, 40], first))
    np.testing.assert_array_equal(lower_threshold[75:, 65:], image[75:, 65:])
    np.testing.assert_array_equal(lower_threshold[:NOTE_ROWS, :15], image[:NOTE_ROWS, :15])  # no note
    # A padded invalid row may hold anything (NaN boxes, class -1).
    padded = draw_instances(image, np.array([[np.nan] * 4]), np.array([np.nan]), np.array([-1]),
                            None, np.array([False]), CLASS_NAMES)
    np.testing.assert_array_equal(padded, none_drawn)
    empty = draw_instances(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int),
                           np.zeros((0, SIZE, SIZE), bool), np.zeros(0, bool), CLASS_NAMES)
    np.testing.assert_array_equal(empty, none_drawn)
    # Ground truth without objects: a one-line note, "no objects".
    no_objects = draw_instances(image, np.zeros((0, 4)), None, np.zeros(0, int), None, None,
                                CLASS_NAMES)
    np.testing.assert_array_equal(no_objects[ONE_LINE_NOTE_ROWS:], image[ONE_LINE_NOTE_ROWS:])
    assert np.sum(np.all(no_objects[:ONE_LINE_NOTE_ROWS] == 0, axis=-1)) > 200
    assert not np.array_equal(no_objects[:ONE_LINE_NOTE_ROWS], none_drawn[:ONE_LINE_NOTE_ROWS])


def test_ground_truth_labels_and_boxes_without_masks():
    image = random_image(2)
    boxes, masks = two_instances()
    with_scores = draw_instances(image, boxes[:1], np.array([0.75]), np.array([2]), None, None,
                                 CLASS_NAMES)
    names_only = draw_instances(image, boxes[:1], None, np.array([2]), None, None, CLASS_NAMES)
    colour = instance_colours(1)[0]
    for picture in (with_scores, names_only):
        np.testing.assert_array_equal(picture[50, 40], image[50, 40])  # no mask: inside unchanged
        np.testing.assert_array_equal(picture[50, 20], colour)         # outline drawn

    def label_width(picture):
        changed = np.any(picture[15:30] != image[15:30], axis=(0, 2))
        return np.flatnonzero(changed).max() - 20 + 1
    assert label_width(with_scores) > label_width(names_only) > 20  # "rectangle 0.75" vs "rectangle"


def test_label_moves_inside_a_box_at_the_top_edge():
    image = random_image(3)
    picture = draw_instances(image, np.array([[10, 0, 80, 40]]), None, np.array([1]), None, None,
                             CLASS_NAMES, alpha=0.0)
    colour = instance_colours(1)[0]
    assert np.all(picture[1, 11] == colour)  # label background just inside the top-left corner
    np.testing.assert_array_equal(picture[42:], image[42:])


@pytest.mark.parametrize("change, message", [
    (dict(image=np.zeros((SIZE, SIZE, 3), np.float32)), "image must be uint8"),
    (dict(image=np.zeros((SIZE, SIZE), np.uint8)), r"\[H, W, 3\]"),
    (dict(boxes=np.zeros((2, 3))), r"boxes must have shape \[D, 4\]"),
    (dict(scores=np.ones(3)), r"scores must have shape \[2\]"),
    (dict(classes=np.array([1.0, 2.0])), "integer dtype"),
    (dict(classes=np.array([1, 4])), r"classes must lie in \[0, 4\).*\[4\]"),
    (dict(masks=np.zeros((2, SIZE, SIZE - 1), bool)), "masks must have shape"),
    (dict(valid=np.ones(3, bool)), r"valid must have shape \[2\]"),
    (dict(boxes=np.array([[0, 0, 5, np.inf], [1, 1, 4, 4]])), "finite"),
    (dict(alpha=-0.1), "alpha"),
])
def test_draw_instances_bad_input(change, message):
    boxes, masks = two_instances()
    arguments = dict(image=random_image(), boxes=boxes, scores=np.array([0.9, 0.8]),
                     classes=np.array([1, 2]), masks=masks, valid=None,
                     class_names=CLASS_NAMES) | change
    with pytest.raises(ValueError, match=message):
        draw_instances(**arguments)


def read_png(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture.convert("RGB"))


def grid_inputs(size=32):
    images = np.stack([random_image(4, size), random_image(5, size)])
    masks = np.zeros((2, size, size), np.uint8)
    masks[0, 12:24, 6:18] = 1
    masks[1, 2:8, 20:30] = 1
    boxes = np.array([[6, 12, 18, 24], [20, 2, 30, 8]], np.float32)
    truths = [{"boxes": boxes, "labels": np.array([1, 3]), "masks": masks,
               "instance_valid": np.array([True, False])},
              {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "masks": np.zeros((0, size, size))}]
    predictions = [{"boxes": boxes, "scores": np.array([0.9, 0.1]), "classes": np.array([1, 3]),
                    "masks": masks.astype(bool)},
                   {"boxes": boxes, "scores": np.array([0.4, 0.3]), "classes": np.array([2, 2])}]
    return images, truths, predictions


def test_instance_grid_layout_and_tiles(tmp_path):
    images, truths, predictions = grid_inputs()
    path = tmp_path / "nested" / "instances.png"
    save_instance_grid(path, images, truths, predictions, CLASS_NAMES, scale=3)
    picture = read_png(path)
    tile, gap, text = 96, 4, 20
    assert picture.shape == (text + 2 * (tile + gap), 3 * tile + 4 * gap, 3)
    colour = instance_colours(1)[0]
    for row in range(2):
        top = text + row * (tile + gap)
        upscaled = images[row].repeat(3, axis=0).repeat(3, axis=1)
        np.testing.assert_array_equal(picture[top:top + tile, gap:gap + tile], upscaled)
        truth_tile = picture[top:top + tile, 2 * gap + tile:2 * gap + 2 * tile]
        prediction_tile = picture[top:top + tile, 3 * gap + 2 * tile:3 * gap + 3 * tile]
        if row == 0:
            # Mask (rows 12:24, columns 6:18) upscaled by 3; the invalid / low-score second
            # instance (rows 2:8, columns 20:30) is left out of both tiles.
            for drawn in (truth_tile, prediction_tile):
                np.testing.assert_array_equal(drawn[54, 36], blend(upscaled[54, 36], colour))
                np.testing.assert_array_equal(drawn[54, 18], colour)  # left outline at x1 = 18
                np.testing.assert_array_equal(drawn[6:24, 60:90], upscaled[6:24, 60:90])
        else:  # no objects; all scores below 0.5: the image and a note at the top left
            for drawn in (truth_tile, prediction_tile):
                np.testing.assert_array_equal(drawn[NOTE_ROWS:], upscaled[NOTE_ROWS:])
                assert np.sum(np.all(drawn[:NOTE_ROWS] == 0, axis=-1)) > 200
            np.testing.assert_array_equal(truth_tile[ONE_LINE_NOTE_ROWS:],  # "no objects": one line
                                          upscaled[ONE_LINE_NOTE_ROWS:])
        np.testing.assert_array_equal(picture[top - 1], 255)  # white gap above each row
    assert np.any(picture[:text] < 128)  # column titles


def test_instance_grid_bad_input(tmp_path):
    images, truths, predictions = grid_inputs()
    path = tmp_path / "grid.png"
    with pytest.raises(ValueError, match="ground_truths must hold one dict per image"):
        save_instance_grid(path, images, truths[:1], predictions, CLASS_NAMES)
    with pytest.raises(ValueError, match="predictions must hold one dict per image"):
        save_instance_grid(path, images, truths, predictions * 2, CLASS_NAMES)
    with pytest.raises(ValueError, match="images"):
        save_instance_grid(path, images[:0], [], [], CLASS_NAMES)
    with pytest.raises(ValueError, match="scale"):
        save_instance_grid(path, images, truths, predictions, CLASS_NAMES, scale=0)
    with pytest.raises(ValueError, match="images must be uint8"):
        save_instance_grid(path, images / 255.0, truths, predictions, CLASS_NAMES)
    assert not path.exists()
