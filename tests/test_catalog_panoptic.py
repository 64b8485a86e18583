"""TFDS coco/2017_panoptic for Panoptic FPN on mocked prepared data (tests/test_catalog_data.py):
the stored semantic target by hand, the panoptic frame's ground truth with COCO's ids, the
stuff class names' checks, and PQ through the training loop equal to `evaluate_files` of
the examples' own segments."""

import os

import numpy as np
import pytest

from jaxseg import config_validation
from jaxseg.config_files import load_config_file
from jaxseg.data import catalog_truth, panoptic_format, pipeline
from jaxseg.data.coco_categories import (
    COCO_CATEGORY_IDS,
    COCO_CLASS_NAMES,
    COCO_STUFF_CATEGORY_IDS,
    COCO_STUFF_CLASS_NAMES,
)
from jaxseg.data.sources import catalog as catalog_source
from jaxseg.errors import ConfigError
from jaxseg.evaluation import panoptic
from tests import test_catalog_data as catalog_tests
from tests.test_catalog_data import CONFIG_DIR, coco_example, data_config, mocked_tfds, objects
from tests.test_train_panoptic import tiny_panoptic_config, trained_exports

coco_dir = catalog_tests.coco_dir
# TFDS label -> COCO category id, written out: things 0..79, then stuff 80..132.
COCO_IDS = COCO_CATEGORY_IDS + COCO_STUFF_CATEGORY_IDS


def panoptic_example(segment_ids: np.ndarray, found: dict, image_id: int, rng) -> dict:
    """A coco/2017_panoptic example of the segment ids int [h, w] (R + 256 G + 65536 B)."""
    rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], -1)
    image = rng.integers(0, 256, (*segment_ids.shape, 3), dtype=np.uint8)
    return coco_example(image, found, rgb.astype(np.uint8), image_id=image_id)


def hand_made_example(rng) -> dict:
    """48x64 (stored at 24x32, every second row and column from the second): a person, a
    crowd of cars, stuff "sky-other-merged" (label 119) and "road" (label 100), an id that
    panoptic_objects does not list, VOID elsewhere."""
    ids = np.zeros((48, 64), np.int64)
    ids[0:20, :] = 3000  # sky: rows 0..9 stored
    ids[30:48, 0:40] = 70000  # road: rows 15..23, columns 0..19
    ids[4:16, 4:20] = 5  # person: rows 2..7, columns 2..9
    ids[20:30, 40:64] = 9  # crowd of cars: rows 10..14, columns 20..31
    ids[30:40, 40:64] = 12345  # not listed: VOID
    found = objects(
        bbox=np.tile([0.0, 0.0, 0.5, 0.5], (4, 1)),
        labels=[119, 100, 0, 2],
        crowd=[False, False, False, True],
        ids=[3000, 70000, 5, 9],
    )
    found["area"] = np.array([(ids == i).sum() for i in (3000, 70000, 5, 9)], np.int64)
    return panoptic_example(ids, found, 139, rng)


def panoptic_config(**fields):
    return data_config("panoptic_coco.py", download=False, **fields)


def test_stored_semantic_map_is_panoptic_fpns_target(coco_dir):
    example = hand_made_example(np.random.default_rng(0))
    with mocked_tfds({"train": [example]}, coco_dir):
        decoded = pipeline.load_split(panoptic_config(), "train")[0]
    semantic = np.full((32, 32), 255)  # VOID and padding (rows 24..31)
    semantic[0:10] = 40  # sky: TFDS label 119 -> stuff label 40
    semantic[15:24, 0:20] = 21  # road: TFDS label 100 -> 21
    semantic[2:8, 2:10] = 0  # person
    semantic[10:15, 20:32] = 0  # the crowd is thing too
    np.testing.assert_array_equal(decoded["semantic"], semantic)
    assert COCO_STUFF_CLASS_NAMES[40] == "sky-other-merged" and COCO_STUFF_CLASS_NAMES[21] == "road"
    # The instances are the non-crowd things alone.
    np.testing.assert_array_equal(decoded["labels"], [1])
    np.testing.assert_array_equal(decoded["boxes"], [[2, 2, 10, 8]])


def test_panoptic_frame_is_the_examples_segments_with_coco_ids(coco_dir):
    rng = np.random.default_rng(1)
    first = hand_made_example(rng)
    ids = np.full((30, 50), 7, np.int64)
    ids[10:20, 10:30] = 8
    second = panoptic_example(
        ids, objects(np.zeros((2, 4)), [132, 79], [False, False], ids=[7, 8]), 285, rng
    )
    config = panoptic_config()
    with mocked_tfds({"validation": [first, second]}, coco_dir):
        source = pipeline.load_split(config, "validation")
        frame = catalog_source.panoptic_frame(config, source)
        truth = [frame.ground_truth(index) for index in range(2)]

    assert len(frame.categories) == 133
    by_id = {c["id"]: (c["name"], c["isthing"]) for c in frame.categories}
    assert by_id[1] == ("person", 1) and by_id[90] == ("toothbrush", 1)
    assert by_id[92] == ("banner", 0) and by_id[200] == ("rug-merged", 0)
    assert frame.thing_ids == (0, *COCO_CATEGORY_IDS) and frame.stuff_ids == (0, *COCO_STUFF_CATEGORY_IDS)
    assert frame.category_id({"isthing": False, "label": 40}) == 187  # sky-other-merged
    assert frame.image_ids == (139, 285)
    assert [(p.height, p.width) for p in frame.placements] == [(48, 64), (30, 50)]

    # At the source size; the unlisted id 12345 becomes VOID.
    source_ids = panoptic_format.rgb_to_ids(first["panoptic_image"])
    np.testing.assert_array_equal(truth[0][0], np.where(source_ids == 12345, 0, source_ids))
    areas = first["panoptic_objects"]["area"].tolist()
    assert truth[0][1] == [
        {"id": 3000, "category_id": 187, "iscrowd": 0, "area": areas[0]},
        {"id": 70000, "category_id": 149, "iscrowd": 0, "area": areas[1]},
        {"id": 5, "category_id": 1, "iscrowd": 0, "area": areas[2]},
        {"id": 9, "category_id": 3, "iscrowd": 1, "area": areas[3]},
    ]
    np.testing.assert_array_equal(truth[1][0], ids)
    # TFDS's area (100 in `objects`) as the example gives it.
    assert truth[1][1] == [
        {"id": 7, "category_id": 200, "iscrowd": 0, "area": 100},
        {"id": 8, "category_id": 90, "iscrowd": 0, "area": 100},
    ]


def test_ground_truth_areas_are_pixel_counts_without_tfds_areas():
    example = hand_made_example(np.random.default_rng(2))
    del example["panoptic_objects"]["area"]
    _, info = catalog_truth.coco_panoptic_ground_truth(example)
    ids = panoptic_format.rgb_to_ids(example["panoptic_image"])
    assert [s["area"] for s in info] == [int((ids == s["id"]).sum()) for s in info]


def test_only_coco_panoptic_has_a_panoptic_frame(coco_dir):
    config = data_config("mask_rcnn_coco_tfds.py", tfds_name="coco/2017", download=False)
    with mocked_tfds({"validation": []}, coco_dir):
        source = pipeline.load_split(config, "validation")
        with pytest.raises(ValueError, match="coco/2017 has no panoptic segments"):
            catalog_source.panoptic_frame(config, source)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"stuff_class_names": ("thing", "sky")}, "must be the 54 classes of coco/2017_panoptic"),
        ({"stuff_class_names": ("stuff", *COCO_STUFF_CLASS_NAMES[1:])}, "must be the 54 classes"),
        ({"tfds_name": "coco/2017"}, "coco/2017 has no stuff classes"),
    ],
)
def test_other_stuff_class_names_are_a_config_error(fields, message):
    config = load_config_file(os.path.join(CONFIG_DIR, "panoptic_coco.py"))
    for field, value in fields.items():
        config.data[field] = value
    with pytest.raises(ConfigError, match=message) as error:
        config_validation.validate_config(config)
    assert str(error.value).startswith("config.data.stuff_class_names=")


def test_prepared_data_with_other_stuff_labels_is_an_error(tmp_path):
    stuff = list(COCO_STUFF_CLASS_NAMES[1:])
    stuff[0], stuff[1] = stuff[1], stuff[0]
    catalog_tests.write_coco_metadata(str(tmp_path), "coco/2017_panoptic", [*COCO_CLASS_NAMES[1:], *stuff])
    with (
        mocked_tfds({}, str(tmp_path)),
        pytest.raises(ValueError, match="are not the 133 classes"),
    ):
        pipeline.load_split(panoptic_config(), "train")


def random_examples(count: int, first_id: int, rng) -> list:
    """Examples of 40..79 x 40..79 pixels: two stuff regions (a random band of VOID between
    them), 1-3 rectangular things over them, one of them sometimes a crowd; TFDS's areas
    are the pixel counts."""
    examples = []
    for image_id in range(first_id, first_id + count):
        height, width = (int(v) for v in rng.integers(40, 80, 2))
        ids = np.full((height, width), 1000, np.int64)
        split = int(rng.integers(height // 3, 2 * height // 3))
        ids[split:] = 2000
        ids[split : split + int(rng.integers(0, 4))] = 0
        labels = [int(v) for v in rng.choice(np.arange(80, 133), 2, replace=False)]
        crowd = [False, False]
        for segment in range(1, int(rng.integers(1, 4)) + 1):
            top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
            ids[top : top + height // 3, left : left + width // 3] = 300 * segment
            labels.append(int(rng.integers(0, 80)))
            crowd.append(segment == 3)
        listed = [1000, 2000, *(300 * k for k in range(1, len(labels) - 1))]
        kept = [k for k, segment in enumerate(listed) if (ids == segment).any()]
        found = objects(
            np.zeros((len(kept), 4)), [labels[k] for k in kept], [crowd[k] for k in kept],
            ids=[listed[k] for k in kept],
        )
        found["area"] = np.array([(ids == listed[k]).sum() for k in kept], np.int64)
        examples.append(panoptic_example(ids, found, image_id, rng))
    return examples


def write_ground_truth(directory: str, examples: list) -> tuple[str, str]:
    """The examples' own panoptic ground truth as COCO panoptic files: (JSON, PNG folder)."""
    folder = os.path.join(directory, "truth")
    os.makedirs(folder)
    annotations = []
    for example in examples:
        image_id = int(example["image/id"])
        name = f"{image_id}.png"
        panoptic_format.write_id_png(os.path.join(folder, name), panoptic_format.rgb_to_ids(example["panoptic_image"]))
        found = example["panoptic_objects"]
        segments = [
            {"id": int(i), "category_id": COCO_IDS[label], "iscrowd": int(crowd), "area": int(area)}
            for i, label, crowd, area in zip(found["id"], found["label"], found["is_crowd"], found["area"])
        ]
        annotations.append({"image_id": image_id, "file_name": name, "segments_info": segments})
    names = COCO_CLASS_NAMES[1:] + COCO_STUFF_CLASS_NAMES[1:]
    categories = [{"id": i, "name": n, "isthing": int(k < 80)} for k, (i, n) in enumerate(zip(COCO_IDS, names))]
    path = os.path.join(directory, "truth.json")
    panoptic_format.write_panoptic_json(path, annotations, categories)
    return path, folder


@pytest.mark.slow
def test_panoptic_coco_pq_equals_evaluate_files_of_the_examples(coco_dir, tmp_path):
    """4 steps of a tiny Panoptic FPN on configs/panoptic_coco.py's data: metrics.json's PQ
    is `evaluate_files` of the exported predictions against the examples' own segments."""
    rng = np.random.default_rng(3)
    splits = {"train": random_examples(8, 1, rng), "validation": random_examples(4, 101, rng)}
    data = panoptic_config(data_dir=coco_dir, image_size=64, num_workers=0)
    config = tiny_panoptic_config(coco_dir)
    config.data = data
    with mocked_tfds(splits, coco_dir):
        written, directory, exported = trained_exports(config, str(tmp_path / "run"))
    assert [a["image_id"] for a in exported] == [101, 102, 103, 104]
    used = {s["category_id"] for a in exported for s in a["segments_info"]}
    assert used and used <= set(COCO_IDS)
    truth = write_ground_truth(str(tmp_path), splits["validation"])
    ours = panoptic.evaluate_files(*truth, os.path.join(directory, "panoptic_predictions.json"),
                                   os.path.join(directory, "panoptic_predictions"), progress=False)
    for name in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        assert written[name] == pytest.approx(ours[name], abs=1e-12), name
