"""detectron2's ResizeShortestEdge on one static canvas (jaxseg.data.geometry), its training
draw of the shorter side (jaxseg.data.augment.multi_scale) and a COCO-format folder stored
and scored with it.

Expected sizes are detectron2's (ResizeShortestEdge.get_output_shape): scale =
short / min(h, w), scaled down to max / longer side where the longer side would exceed max,
then int(x + 0.5).
"""

import os

import ml_collections
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jaxseg.config_files import load_config_file
from jaxseg.config_validation import validate_config
from jaxseg.data import augment, batching, geometry, pipeline
from jaxseg.data.sources import coco_folder as coco_source
from jaxseg.errors import ConfigError
from jaxseg.tasks.instance import InstanceSegmentation
from tests import test_eval_frame

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
COCO_FIT = geometry.Fit(1344, 800, 1333)
TRAIN_SIDES = (640, 672, 704, 736, 768, 800)
IGNORE = 255


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "source, resized",
    [
        ((480, 640), (800, 1067)),  # shorter side binds: 640 · 800 / 480 = 1066.7
        ((640, 480), (1067, 800)),
        ((500, 2000), (333, 1333)),  # longer side binds: 500 · 1333 / 2000 = 333.25
        ((800, 800), (800, 800)),
        ((427, 640), (800, 1199)),  # 640 · 800 / 427 = 1199.06
    ],
)
def test_detectron2_sizes(source, resized):
    assert geometry.resized_shape(*source, COCO_FIT) == resized
    assert geometry.placement(source, COCO_FIT) == geometry.Placement(*source, *resized)


def test_the_default_fit_is_the_longer_side_fit():
    fit = geometry.checked_fit(32)
    assert fit == geometry.Fit(32) and fit.tag == ""
    assert geometry.resized_shape(20, 13, fit) == (32, 21)
    assert geometry.resized_shape(5, 400, fit) == (1, 32)
    # A longer-side limit below the canvas: the longer side becomes it.
    assert geometry.resized_shape(20, 40, geometry.checked_fit(64, None, 32)) == (16, 32)
    assert COCO_FIT.tag == "_e800m1333"


def test_fit_image_puts_the_content_at_the_top_left():
    image = np.full((48, 64, 3), 200, np.uint8)
    canvas, placed = geometry.fit_image(image, geometry.Fit(128, 60, 100))
    assert canvas.shape == (128, 128, 3)
    assert (placed.valid_height, placed.valid_width) == (60, 80)
    assert (canvas[:60, :80] == 200).all() and (canvas[60:] == 0).all()
    assert (canvas[:, 80:] == 0).all()


def test_placement_maps_back_to_the_source_frame():
    """A label map of 40-pixel blocks and boxes survive the trip source -> canvas -> source."""
    source_hw = (480, 640)
    rows, columns = np.meshgrid(np.arange(480) // 40, np.arange(640) // 40, indexing="ij")
    labels = (rows * 16 + columns).astype(np.int32)
    canvas = geometry.fit_nearest(labels, COCO_FIT, -1)
    assert canvas.shape == (1344, 1344) and (canvas[800:] == -1).all()
    assert (canvas[:, 1067:] == -1).all() and (canvas[:800, :1067] >= 0).all()
    placed = geometry.placement(source_hw, COCO_FIT)
    np.testing.assert_array_equal(placed.label_map_to_image(canvas), labels)
    boxes = np.array([[10, 20, 300, 400], [0, 0, 640, 480]], np.float32)
    on_canvas = boxes * np.array([1067 / 640, 800 / 480] * 2, np.float32)
    np.testing.assert_allclose(placed.boxes_to_image(on_canvas), boxes, rtol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"resize_max_longer_side": 2000}, "resize_max_longer_side=2000 must be None or an int"),
        ({"resize_shorter_side": 1400}, "resize_shorter_side=1400 must be None or an int"),
        ({"resize_shorter_side": 0}, "resize_shorter_side=0 must be None or an int"),
        ({"train_shorter_sides": (640, 900)}, "train_shorter_sides=(640, 900) must be None"),
        ({"train_shorter_sides": ()}, "train_shorter_sides=() must be None"),
        ({"scale_jitter": (0.8, 1.25)}, "train_shorter_sides=(640, 672, 704, 736, 768, 800) and"),
        ({"resize_shorter_side": None}, "train_shorter_sides=(640, 672, 704, 736, 768, 800) needs"),
    ],
)
def test_invalid_resize_fields_name_the_field(fields, message):
    # The TFDS variant: its data needs no folder, and it shares mask_rcnn_coco's geometry.
    config = load_config_file(os.path.join(CONFIG_DIR, "mask_rcnn_coco_tfds.py"))
    for field, value in fields.items():
        config.data[field] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value).startswith(f"config.data.{message}"), str(error.value)
    assert "\n" not in str(error.value)


def test_mask_rcnn_coco_uses_detectron2_sizes():
    for name in ("mask_rcnn_coco.py", "mask_rcnn_coco_tfds.py", "panoptic_coco.py"):
        config = load_config_file(os.path.join(CONFIG_DIR, name))
        assert geometry.fit_of(config.data) == COCO_FIT, name
        assert config.data.train_shorter_sides == TRAIN_SIDES, name
        assert config.data.scale_jitter is None, name
    config.model.pretrained = None  # its ImageNet file is not here
    validate_config(config)  # the COCO files' config is validated in test_coco_folder


def test_generated_datasets_reject_resize_fields():
    config = load_config_file(os.path.join(CONFIG_DIR, "unet_shapes.py"))
    config.data.resize_shorter_side = 64
    with pytest.raises(ConfigError, match=r"^config.data.resize_shorter_side=64: the shapes"):
        validate_config(config)


# --------------------------------------------------------------------------- training draw

CANVAS = 64
FIT = geometry.Fit(CANVAS, 40, 60)
SIDES = (24, 32, 40)
# Source (height, width) -> resized (height, width) at each side of SIDES, by hand.
SOURCES = {
    (48, 80): {24: (24, 40), 32: (32, 53), 40: (36, 60)},  # 40: 80·40/48 = 66.7 > 60
    (90, 60): {24: (36, 24), 32: (48, 32), 40: (60, 40)},
}


def _record(source_hw, image_id):
    """A decoded folder record of a source image of `source_hw` fitted by FIT: the content
    all 100, one instance covering the content's top-left quarter."""
    height, width = geometry.resized_shape(*source_hw, FIT)
    image = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    image[:height, :width] = 100
    semantic = np.full((CANVAS, CANVAS, 1), IGNORE, np.uint8)
    semantic[:height, :width] = 0
    mask = np.zeros((CANVAS, CANVAS), np.uint8)
    mask[: height // 2, : width // 2] = 1
    rle = mask_utils.encode(np.asfortranarray(mask[..., None]))[0]
    return {
        "image": image, "semantic": semantic, "mask_rles": np.array([rle["counts"]], object),
        "boxes": np.array([[0, 0, width // 2, height // 2]], np.float32),
        "labels": np.array([1], np.int32), "image_id": image_id,
        "height": source_hw[0], "width": source_hw[1],
    }


def _source():
    records = [_record(hw, k) for k, hw in enumerate(SOURCES)]
    return pipeline.DecodedSource(records, fit=FIT)


def _content_hw(semantic: np.ndarray) -> tuple[int, int]:
    """(rows, columns) of the non-ignore region, which starts at the top left."""
    inside = semantic != IGNORE
    return int(inside.any(axis=1).sum()), int(inside.any(axis=0).sum())


def test_multi_scale_resizes_the_content_to_the_drawn_side():
    source = _source()
    config = augment.augmentation(shorter_sides=SIDES, fit=FIT, ignore_label=IGNORE)
    seen = set()
    for index, source_hw in enumerate(SOURCES):
        for seed in range(12):
            draw = np.random.default_rng(seed)
            side = SIDES[np.random.default_rng(seed).integers(len(SIDES))]
            example = augment.multi_scale(source[index], draw, config, source.placement(index))
            height, width = SOURCES[source_hw][side]
            assert _content_hw(example["semantic"]) == (height, width)
            assert (example["image"][:height, :width] == 100).all()
            assert (example["image"][height:] == 0).all() and (example["image"][:, width:] == 0).all()
            np.testing.assert_array_equal(example["boxes"], [[0, 0, width // 2, height // 2]])
            seen.add(side)
    assert seen == set(SIDES)


def test_training_batches_draw_listed_sides_deterministically():
    source = _source()
    config = augment.augmentation(shorter_sides=SIDES, fit=FIT, ignore_label=IGNORE)
    kwargs = dict(flip=False, augmentation=config, max_instances=2)
    first = [next(iter(batching.train_batches(source, 2, 7, step, **kwargs))) for step in range(6)]
    stream = batching.train_batches(source, 2, 7, **kwargs)
    again = [next(stream) for _ in range(6)]
    sizes = set()
    for one, other in zip(first, again):
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])
        for row in range(2):
            source_hw = list(SOURCES)[int(one["index"][row])]
            content = _content_hw(one["semantic"][row])
            assert content in SOURCES[source_hw].values()
            sizes.add(content)
    assert len(sizes) > 2  # the draws differ between examples and steps
    other_seed = [next(iter(batching.train_batches(source, 2, 8, s, **kwargs))) for s in range(6)]
    assert any((a["semantic"] != b["semantic"]).any() for a, b in zip(first, other_seed))


def test_without_sides_the_stream_is_unchanged():
    source = _source()
    plain = batching.train_batches(source, 2, 3, max_instances=2)
    unset = batching.train_batches(source, 2, 3, max_instances=2,
                                   augmentation=augment.augmentation(fit=FIT))
    for _ in range(3):
        one, other = next(plain), next(unset)
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])


# --------------------------------------------------------------------------- a COCO folder

# Source (height, width) of test_eval_frame's images -> resized at FIT (40 / 60), by hand.
FOLDER_SIZES = {
    101: (48, 80, 36, 60),  # 80 · 40/48 = 66.7 > 60: longer side 60, 48 · 0.9 = 36
    102: (90, 60, 60, 40),
    103: (40, 100, 24, 60),  # 100 > 60: 40 · 0.6 = 24
    104: (70, 50, 56, 40),
    105: (150, 200, 40, 53),  # 200 · 40/150 = 53.3
    106: (64, 36, 60, 34),  # 64 · 40/36 = 71.1 > 60: 36 · 60/64 = 33.75
    107: (50, 90, 33, 60),  # 90 · 40/50 = 72 > 60: 50 · 60/90 = 33.3
    108: (80, 45, 60, 34),  # 80 · 40/45 = 71.1 > 60: 45 · 0.75 = 33.75
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = test_eval_frame.folder_config(str(tmp_path_factory.mktemp("folder")))
    config.data.resize_shorter_side = FIT.shorter_side
    config.data.resize_max_longer_side = FIT.max_longer_side
    sources = {split: pipeline.load_split(config.data, split) for split in ("train", "validation")}
    return config, sources


def test_the_folder_is_stored_at_detectron2_sizes(folder):
    _, sources = folder
    seen = {}
    for source in sources.values():
        for index in range(len(source)):
            placed = source.placement(index)
            image_id = source.image_id(index)
            seen[image_id] = (placed.height, placed.width, placed.valid_height, placed.valid_width)
            assert _content_hw(source[index]["semantic"]) == seen[image_id][2:]
    assert seen == FOLDER_SIZES


def test_the_folder_scores_ap_one_in_the_source_frame(folder):
    """Perfect detections given in source pixels, moved onto the canvases as the model gives
    them, come back to AP 1.0 against the JSON."""
    config, sources = folder
    for source in sources.values():
        metrics, _ = test_eval_frame._evaluate(InstanceSegmentation(config), source)
        defined = {name: value for name, value in metrics.items() if np.isfinite(value)}
        assert {"box_ap", "mask_ap"} <= defined.keys()
        for name, value in defined.items():
            assert value == pytest.approx(1.0, abs=1e-12), name


def test_another_fit_builds_another_dataset(folder):
    config, _ = folder
    default = ml_collections.ConfigDict(config.data.to_dict())
    default.resize_shorter_side = default.resize_max_longer_side = None
    names = {
        coco_source.coco_folder_config_from_data_config(data).name for data in (config.data, default)
    }
    assert len(names) == 2 and any("_e40m60_" in name for name in names)
