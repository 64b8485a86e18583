"""The COCO-panoptic-format folder dataset: stored targets by hand, config errors, and
scoring in the dataset's own frame (its ids, pixels, crowd regions and areas)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxseg import config_validation
from jaxseg.config_files import load_config_file
from jaxseg.data import panoptic_format, pipeline
from jaxseg.data.sources import coco_panoptic_folder as source_kind
from jaxseg.errors import ConfigError

# Things 3 ("cat") and 7 ("dog"), stuff 12 ("wall") and 20 ("floor"): ids neither
# contiguous nor in thing-then-stuff order.
CATEGORIES = [
    {"id": 20, "name": "floor", "isthing": 0},
    {"id": 3, "name": "cat", "isthing": 1},
    {"id": 12, "name": "wall", "isthing": 0},
    {"id": 7, "name": "dog", "isthing": 1},
]
SIZES = [(24, 32), (32, 20), (32, 32), (16, 32), (32, 28), (28, 32)]


def panoptic_image(index, height, width):
    """Ids [h, w] and segments_info: wall on the top half, floor below but for a VOID band,
    a cat, a dog (absent from image 2) and a crowd of dogs."""
    ids = np.zeros((height, width), np.int64)
    ids[: height // 2] = 101
    ids[height // 2 : height - 2] = 102
    ids[2:8, 2:8] = 300 + index
    ids[height // 2 : height // 2 + 6, 10:16] = 4000
    ids[9:12, width - 6 : width - 1] = 70000
    segments = [
        {"id": 101, "category_id": 12, "iscrowd": 0},
        {"id": 102, "category_id": 20, "iscrowd": 0},
        {"id": 300 + index, "category_id": 3, "iscrowd": 0},
        {"id": 4000, "category_id": 7, "iscrowd": 0},
        {"id": 70000, "category_id": 7, "iscrowd": 1},
    ]
    if index == 2:
        ids[ids == 4000] = 102
    segments = [s for s in segments if (ids == s["id"]).any()]
    for s in segments:
        s["area"] = int((ids == s["id"]).sum())
    return ids, segments


def write_folder(root):
    """images/, panoptic/ and panoptic.json under `root`; returns the data config fields."""
    (root / "images").mkdir()
    (root / "panoptic").mkdir()
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate(SIZES):
        image_id = 1000 + 7 * index
        name = f"img{index}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "images" / name)
        ids, segments = panoptic_image(index, height, width)
        panoptic_format.write_id_png(root / "panoptic" / name, ids)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        annotations.append({"image_id": image_id, "file_name": name, "segments_info": segments})
    panoptic_format.write_panoptic_json(root / "panoptic.json", annotations, CATEGORIES, images=images)
    return {"annotations": str(root / "panoptic.json"), "images": str(root / "images"),
            "panoptic_masks": str(root / "panoptic")}


def folder_data_config(tmp_path):
    data = load_config_file("configs/panoptic_shapes.py").data
    data.name = "coco_panoptic_folder"
    for field in ("num_train", "num_validation", "num_test", "generation_seed", "min_shapes", "max_shapes",
                  "min_object_size", "max_object_size", "empty_fraction", "min_visible_pixels"):
        del data[field]
    for field, value in write_folder(tmp_path).items():
        data[field] = value
    data.image_size = 32
    data.class_names = ("background", "cat", "dog")
    data.num_classes = 3
    data.stuff_class_names = ("thing", "wall", "floor")
    data.validation_fraction = 0.34
    data.data_dir = str(tmp_path / "tfds")
    return data


def test_stored_targets_follow_the_panoptic_pngs(tmp_path):
    """Images whose longer side is the image size are stored unscaled: semantic = 0 on every
    thing pixel (the crowd too), 1 = wall, 2 = floor, 255 on VOID and padding; instances
    are the non-crowd things with labels cat 1, dog 2."""
    data = folder_data_config(tmp_path)
    seen = 0
    for split in ("train", "validation"):
        source = pipeline.load_split(data, split)
        for index in range(len(source)):
            position = (source.image_id(index) - 1000) // 7
            height, width = SIZES[position]
            ids, _ = panoptic_image(position, height, width)
            example = source[index]
            expected = np.full((32, 32), 255)
            expected[:height, :width] = np.select(
                [ids == 101, ids == 102, ids > 200], [1, 2, 0], 255)
            np.testing.assert_array_equal(example["semantic"], expected)
            things = [300 + position] + ([4000] if position != 2 else [])
            assert example["labels"].tolist() == [1, 2][: len(things)]
            for mask, thing in zip(example["masks"], things):
                np.testing.assert_array_equal(mask[:height, :width], ids == thing)
            seen += 1
    assert seen == len(SIZES)


def test_frame_is_the_json_and_its_pngs(tmp_path):
    data = folder_data_config(tmp_path)
    source = pipeline.load_split(data, "validation")
    frame = source_kind.panoptic_frame(data, source)
    assert frame.thing_ids == (0, 3, 7) and frame.stuff_ids == (0, 12, 20)
    assert frame.category_id({"isthing": False, "label": 2}) == 20
    position = (frame.image_ids[0] - 1000) // 7
    ids, segments = frame.ground_truth(0)
    expected_ids, expected_segments = panoptic_image(position, *SIZES[position])
    np.testing.assert_array_equal(ids, expected_ids)
    assert segments == expected_segments
    assert (frame.placements[0].height, frame.placements[0].width) == SIZES[position]


def test_config_errors_name_the_field(tmp_path):
    data = folder_data_config(tmp_path)
    config = load_config_file("configs/panoptic_shapes.py")
    config.data = data
    config_validation.validate_config(config)
    config.data.stuff_class_names = ("thing", "floor", "wall")
    with pytest.raises(ConfigError, match=r"config.data.stuff_class_names=\('thing', 'floor', 'wall'\) must be "
                                          r"\('thing', 'wall', 'floor'\)"):
        config_validation.validate_config(config)
    config.data.stuff_class_names = ("thing", "wall", "floor")
    config.data.panoptic_masks = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"config.data.panoptic_masks=.*nowhere': no such directory"):
        config_validation.validate_config(config)
    with open(data.annotations) as file:
        broken = json.load(file)
    broken["categories"] = [c for c in broken["categories"] if c["isthing"]]
    with open(os.path.join(tmp_path, "things_only.json"), "w") as file:
        json.dump(broken, file)
    config.data.panoptic_masks = str(tmp_path / "panoptic")
    config.data.annotations = os.path.join(tmp_path, "things_only.json")
    with pytest.raises(ConfigError, match=r"config.data.annotations: .*needs thing and stuff categories, got 2 and 0"):
        config_validation.validate_config(config)
