"""TFDS catalog datasets (jaxseg.data.catalog) on TFDS's mock data: no download, no TensorFlow.

`tfds.testing.mock_data(as_data_source_fn=...)` serves examples written here, self-consistent
and checked against the real builders' feature specs. Oxford-IIIT Pet comes from TFDS's
builder code, not prepared (download=True makes TFDS's mocked download a no-op). TFDS's COCO
builder code needs TensorFlow for one dtype, so its metadata (dataset_info.json,
features.json) is written once from that code with numpy's int64 in TensorFlow's place; the
tests then open COCO as prepared files, as a machine without TensorFlow does.
"""

import importlib.util
import os
import types
from unittest import mock

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.object_detection import coco as tfds_coco

from jaxseg import train
from jaxseg.config_files import load_config_file
from jaxseg.data import catalog, geometry, pipeline
from jaxseg.data.coco_categories import COCO_STUFF_CLASS_NAMES
from jaxseg.data.sources import catalog as catalog_source
from jaxseg.tasks.instance import InstanceSegmentation
from tests.helpers.detections import empty_detections
from tests.test_train import apply_overrides

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
SIZE = 32
# TFDS trimap value -> class id, as documented in jaxseg/data/catalog.py.
TRIMAP_CLASS = {1: 1, 2: 0, 3: 2}
# TFDS labels 80..132 of coco/2017_panoptic: COCO's stuff categories by increasing id.
PANOPTIC_STUFF = list(COCO_STUFF_CLASS_NAMES[1:])


# --------------------------------------------------------------------------- helpers


def assert_matches_spec(example, spec, where="example") -> None:
    """Asserts that `example` has exactly the keys, dtypes and shapes of a tensor-info tree."""
    if isinstance(spec, dict):
        assert set(example) == set(spec), where
        for key in spec:
            assert_matches_spec(example[key], spec[key], f"{where}[{key!r}]")
        return
    if spec.np_dtype == np.object_:
        assert isinstance(example, (str, bytes)), where
        return
    value = np.asarray(example)
    assert value.dtype == spec.np_dtype, (where, value.dtype, spec.np_dtype)
    assert len(value.shape) == len(spec.shape), (where, value.shape, spec.shape)
    assert all(s is None or s == v for s, v in zip(spec.shape, value.shape)), where


def serving(splits: dict):
    """An `as_data_source` replacement serving `splits` (TFDS split name -> examples)."""

    def as_data_source(builder, split, **kwargs):
        del kwargs
        spec = builder.info.features.get_tensor_info()
        for example in splits[split]:
            assert_matches_spec(example, spec)
        return list(splits[split])

    return as_data_source


def mocked_tfds(splits: dict, prepared_dir: str | None = None):
    """TFDS mocked to serve `splits` (TFDS split name -> examples), nothing downloaded.

    Without `prepared_dir` datasets come from TFDS's builder code, not prepared; with it,
    from the prepared dataset files (metadata) there.
    """
    if prepared_dir is None:
        return tfds.testing.mock_data(as_data_source_fn=serving(splits))
    return tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_FILES,
        data_dir=prepared_dir,
        as_data_source_fn=serving(splits),
    )


def pet_example(trimap: np.ndarray, rng) -> dict:
    """An `oxford_iiit_pet` example: a random image the size of trimap uint8 [h, w]."""
    height, width = trimap.shape
    return {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "segmentation_mask": trimap.astype(np.uint8)[..., None],
        "label": np.int64(rng.integers(37)),
        "species": np.int64(rng.integers(2)),
        "file_name": "pet.jpg",
        "head_bbox": np.array([0.1, 0.2, 0.5, 0.6], np.float32),
    }


def block_trimap(height: int, width: int, rng) -> np.ndarray:
    """A trimap of constant 2x2 blocks of values 1..3: halving it by nearest is exact."""
    blocks = rng.integers(1, 4, (height // 2, width // 2))
    return np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)


def objects(bbox, labels, crowd, ids=None) -> dict:
    """A COCO `objects` / `panoptic_objects` sequence of equal-length fields."""
    count = len(labels)
    return {
        "id": np.asarray(ids if ids is not None else np.arange(count), np.int64),
        "area": np.full(count, 100, np.int64),
        "bbox": np.asarray(bbox, np.float32).reshape(count, 4),
        "label": np.asarray(labels, np.int64),
        "is_crowd": np.asarray(crowd, bool),
    }


def coco_example(image, found: dict, panoptic=None, image_id: int = 1) -> dict:
    example = {
        "image": image,
        "image/filename": f"{image_id:012d}.jpg",
        "image/id": np.int64(image_id),
    }
    if panoptic is None:
        example["objects"] = found
    else:
        example["panoptic_image"] = panoptic
        example["panoptic_image/filename"] = "000000000001.png"
        example["panoptic_objects"] = found
    return example


def resized_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reference: `image` resized to height x width (bilinear) at the top left of S x S zeros."""
    fitted = np.zeros((SIZE, SIZE, 3), np.uint8)
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    fitted[:height, :width] = np.asarray(resized)
    return fitted


def write_coco_metadata(root: str, tfds_name: str, label_names: list) -> None:
    """Writes the metadata of a prepared `tfds_name` (a COCO config) under `root`."""
    stand_in = types.SimpleNamespace(int64=np.int64)
    with (
        tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE),
        mock.patch.object(tfds_coco, "tf", stand_in),
    ):
        builder = tfds.builder(tfds_name, file_format="array_record")
        info = builder.info
    key = "panoptic_objects" if "panoptic" in tfds_name else "objects"
    info.features[key]["label"].names = label_names
    directory = os.path.join(root, *tfds_name.split("/"), str(builder.version))
    os.makedirs(directory)
    info.write_to_directory(directory)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    """A TFDS data dir holding the metadata of prepared coco/2017 and coco/2017_panoptic."""
    root = str(tmp_path_factory.mktemp("coco"))
    things = list(catalog.COCO_CLASS_NAMES[1:])
    write_coco_metadata(root, "coco/2017", things)
    write_coco_metadata(root, "coco/2017_panoptic", things + PANOPTIC_STUFF)
    return root


def data_config(config_name: str, **fields):
    config = load_config_file(os.path.join(CONFIG_DIR, config_name))
    config.data.image_size = SIZE
    # The small test canvases fit the longer side (mask_rcnn_coco's 800/1333 exceed them).
    for field in (*geometry.RESIZE_FIELDS, "train_shorter_sides"):
        if field in config.data:
            config.data[field] = None
    for field, value in fields.items():
        config.data[field] = value
    return config.data


# --------------------------------------------------------------------------- Oxford-IIIT Pet


def test_pet_examples_are_resized_padded_and_mapped(tmp_path):
    rng = np.random.default_rng(0)
    tall = pet_example(block_trimap(64, 32, rng), rng)
    wide = pet_example(block_trimap(32, 64, rng), rng)
    held_out = pet_example(block_trimap(16, 16, rng), rng)
    config = data_config("unet_pets.py", data_dir=str(tmp_path))
    with mocked_tfds({"train": [tall, wide], "test": [held_out]}):
        source = pipeline.load_split(config, "train")
        validation = pipeline.load_split(config, "validation")
    assert len(source) == 2 and len(validation) == 1

    # 64x32 -> 32x16 and 32x64 -> 16x32: nearest sampling takes every second row and column.
    for index, (example, height, width) in enumerate([(tall, 32, 16), (wide, 16, 32)]):
        decoded = source[index]
        trimap = example["segmentation_mask"][::2, ::2, 0]
        semantic = np.full((SIZE, SIZE), 255)
        semantic[:height, :width] = np.vectorize(TRIMAP_CLASS.get)(trimap)
        np.testing.assert_array_equal(decoded["semantic"], semantic)
        assert decoded["semantic"].dtype == np.int32
        np.testing.assert_array_equal(
            decoded["image"], resized_image(example["image"], height, width)
        )
        assert decoded["masks"].shape == (0, SIZE, SIZE)
        assert decoded["boxes"].shape == (0, 4) and decoded["labels"].shape == (0,)
    # The validation split reads TFDS's test split; 16x16 is enlarged to 32x32.
    enlarged = np.repeat(np.repeat(held_out["segmentation_mask"][..., 0], 2, 0), 2, 1)
    np.testing.assert_array_equal(
        validation[0]["semantic"], np.vectorize(TRIMAP_CLASS.get)(enlarged)
    )


@pytest.mark.parametrize(
    "trimap, message",
    [
        (np.zeros((8, 8), np.uint8), "trimap values [0]"),
        (np.full((8, 8), 4, np.uint8), "trimap values [4]"),
    ],
)
def test_pet_trimap_values_outside_1_to_3_are_errors(tmp_path, trimap, message):
    example = pet_example(trimap, np.random.default_rng(1))
    config = data_config("unet_pets.py", data_dir=str(tmp_path))
    with mocked_tfds({"train": [example]}):
        source = pipeline.load_split(config, "train")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        source[0]


def test_pet_mask_of_another_size_is_an_error(tmp_path):
    example = pet_example(np.ones((8, 8), np.uint8), np.random.default_rng(2))
    example["segmentation_mask"] = np.ones((8, 6, 1), np.uint8)
    config = data_config("unet_pets.py", data_dir=str(tmp_path))
    with mocked_tfds({"train": [example]}):
        source = pipeline.load_split(config, "train")
    with pytest.raises(ValueError, match="differ in size"):
        source[0]


def test_missing_data_is_not_downloaded_without_the_flag(tmp_path):
    config = data_config("unet_pets.py", data_dir=str(tmp_path), download=False)
    with (
        mocked_tfds({}),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as download,
        pytest.raises(ValueError) as error,
    ):
        pipeline.load_split(config, "train")
    download.assert_not_called()
    assert "--config.data.download=True" in str(error.value)
    assert "tfds build oxford_iiit_pet" in str(error.value)


def test_only_the_building_process_downloads(tmp_path):
    example = pet_example(np.ones((8, 8), np.uint8), np.random.default_rng(7))
    config = data_config("unet_pets.py", data_dir=str(tmp_path))
    with (
        mocked_tfds({"train": [example]}),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as download,
    ):
        with pytest.raises(ValueError, match="only process 0 downloads"):
            pipeline.load_split(config, "train", build=False)
        download.assert_not_called()
        assert len(pipeline.load_split(config, "train", build=True)) == 1
    download.assert_called_once_with(file_format="array_record")


# --------------------------------------------------------------------------- COCO


def test_coco_boxes_become_box_masks_without_crowds(coco_dir):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # stored at 24x32: scale 1/2
    found = objects(
        bbox=[
            [0.25, 0.125, 0.75, 0.5],  # (ymin, xmin, ymax, xmax) -> (4, 6, 16, 18) in pixels
            [0.0, 0.0, 1.0, 1.0],  # crowd
            [0.1, 0.1, 0.3, 0.3],  # (3.2, 2.4, 9.6, 7.2): rows 2..6, columns 3..9
            [0.5, 0.5, 0.51, 0.51],  # rows [12, 12.24): covers no pixel centre
            [20.7 / 24, 20.6 / 32, 23.3 / 24, 30.4 / 32],  # rows 21..22, columns 21..29
        ],
        labels=[0, 5, 79, 3, 10],
        crowd=[False, True, False, False, False],
    )
    config = data_config("mask_rcnn_coco_tfds.py", tfds_name="coco/2017", download=False)
    empty = objects(bbox=np.zeros((0, 4)), labels=[], crowd=[])
    with mocked_tfds(
        {"validation": [coco_example(image, found), coco_example(image, empty)]}, coco_dir
    ):
        source = pipeline.load_split(config, "validation")
        decoded, without_objects = source[0], source[1]

    masks = np.zeros((3, SIZE, SIZE), np.uint8)
    masks[0, 6:18, 4:16] = 1
    masks[1, 2:7, 3:10] = 1
    masks[2, 21:23, 21:30] = 1
    np.testing.assert_array_equal(decoded["masks"], masks)
    expected_boxes = [[4, 6, 16, 18], [3.2, 2.4, 9.6, 7.2], [20.6, 20.7, 30.4, 23.3]]
    np.testing.assert_allclose(decoded["boxes"], expected_boxes, atol=1e-5)
    np.testing.assert_array_equal(decoded["labels"], [1, 80, 11])
    semantic = np.full((SIZE, SIZE), 255)
    semantic[:24] = 0
    semantic[6:18, 4:16] = 1
    semantic[2:7, 3:10] = 80
    semantic[21:23, 21:30] = 11
    np.testing.assert_array_equal(decoded["semantic"], semantic)
    np.testing.assert_array_equal(decoded["image"], resized_image(image, 24, 32))
    assert without_objects["masks"].shape == (0, SIZE, SIZE)
    assert without_objects["boxes"].shape == (0, 4) and without_objects["labels"].shape == (0,)


def test_coco_panoptic_thing_segments_become_masks_and_semantic_target(coco_dir):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    segment_ids = np.zeros((48, 64), np.int64)
    segment_ids[0:16, 0:20] = 5  # person
    segment_ids[20:40, 30:64] = 300  # toothbrush
    segment_ids[40:48, 0:30] = 70000  # stuff: TFDS label 100 is stuff label 21
    segment_ids[0:10, 40:60] = 9  # crowd
    segment_ids[0, 63] = 11  # an even row: not sampled when halving
    # Segment id = R + 256 G + 65536 B.
    panoptic = np.stack(
        [segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1
    ).astype(np.uint8)
    found = objects(
        bbox=np.tile([0.0, 0.0, 0.5, 0.5], (5, 1)),
        labels=[0, 100, 2, 79, 3],
        crowd=[False, False, True, False, False],
        ids=[5, 70000, 9, 300, 11],
    )
    config = data_config("mask_rcnn_coco_tfds.py", download=False)
    only_stuff = objects(bbox=[[0.0, 0.0, 1.0, 1.0]], labels=[100], crowd=[False], ids=[70000])
    served = [coco_example(image, found, panoptic), coco_example(image, only_stuff, panoptic)]
    with mocked_tfds({"train": served}, coco_dir):
        source = pipeline.load_split(config, "train")
        decoded, without_things = source[0], source[1]

    masks = np.zeros((2, SIZE, SIZE), np.uint8)
    masks[0, 0:8, 0:10] = 1
    masks[1, 10:20, 15:32] = 1
    np.testing.assert_array_equal(decoded["masks"], masks)
    np.testing.assert_array_equal(decoded["boxes"], [[0, 0, 10, 8], [15, 10, 32, 20]])
    np.testing.assert_array_equal(decoded["labels"], [1, 80])
    # Panoptic FPN's target: things (the crowd too) 0, stuff 21, VOID and padding 255.
    semantic = np.full((SIZE, SIZE), 255)
    semantic[0:8, 0:10] = 0
    semantic[10:20, 15:32] = 0
    semantic[0:5, 20:30] = 0
    semantic[20:24, 0:15] = 21
    np.testing.assert_array_equal(decoded["semantic"], semantic)
    assert without_things["masks"].shape == (0, SIZE, SIZE)
    assert without_things["boxes"].shape == (0, 4) and without_things["labels"].shape == (0,)


def _coco_frame_split(coco_dir):
    """Two coco/2017 validation examples (48x64 and 30x50, ids 139 and 285) and the split's
    frame; the first has a crowd region and an object covering no pixel centre."""
    rng = np.random.default_rng(5)
    first = objects(
        bbox=[[0.25, 0.125, 0.75, 0.5], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.51, 0.51]],
        labels=[0, 5, 79],
        crowd=[False, True, False],
    )
    second = objects(bbox=[[0.1, 0.2, 0.9, 0.6]], labels=[79], crowd=[False])
    served = [
        coco_example(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), first, image_id=139),
        coco_example(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8), second, image_id=285),
    ]
    config = data_config("mask_rcnn_coco_tfds.py", tfds_name="coco/2017", download=False)
    return config, served


def test_coco_is_scored_in_the_source_pixels_with_coco_ids(coco_dir):
    """Ground truth at the TFDS images' own size, crowd kept, COCO's category ids."""
    config, served = _coco_frame_split(coco_dir)
    with mocked_tfds({"validation": served}, coco_dir):
        source = pipeline.load_split(config, "validation")
        frame = catalog_source.instance_frame(config, source)
    truth = frame.ground_truth
    assert truth["images"] == [
        {"id": 139, "height": 48, "width": 64}, {"id": 285, "height": 30, "width": 50}
    ]
    assert frame.image_ids == (139, 285)
    summary = [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
               for a in truth["annotations"]]
    # (0.25, 0.125, 0.75, 0.5) of 48x64: rows 12..35, columns 8..31. Label 79 is COCO's 90.
    # (0.1, 0.2, 0.9, 0.6) of 30x50: rows 3..26 (centres 3.5..26.5 < 27), columns 10..29.
    assert summary == [
        (139, 1, [8.0, 12.0, 24.0, 24.0], 576.0, 0),
        (139, 6, [0.0, 0.0, 64.0, 48.0], 3072.0, 1),
        (285, 90, [10.0, 3.0, 20.0, 24.0], 480.0, 0),
    ]
    assert {c["id"]: c["name"] for c in truth["categories"]}[90] == "toothbrush"
    assert frame.category_ids[1] == 1 and frame.category_ids[80] == 90
    assert (frame.placements[1].valid_height, frame.placements[1].valid_width) == (19, 32)


@pytest.mark.slow
def test_coco_perfect_detections_score_ap_one_in_the_source_frame(coco_dir):
    """Boxes and masks of the source-frame truth, moved onto the 32x32 canvases as the
    model gives them (one more on the crowd region, best scored), come back to AP 1."""
    config, served = _coco_frame_split(coco_dir)
    full = load_config_file(os.path.join(CONFIG_DIR, "mask_rcnn_coco_tfds.py"))
    full.data = config
    with mocked_tfds({"validation": served}, coco_dir):
        source = pipeline.load_split(config, "validation")
        task = InstanceSegmentation(full)
        evaluation = task.new_evaluation(source)
    truth = task.frame(source).ground_truth
    slots = 4
    outputs = {**empty_detections(2, slots, 28), "index": np.arange(2, dtype=np.int32)}
    labels = {coco_id: label for label, coco_id in enumerate(task.frame(source).category_ids)}
    for row in range(2):
        placement = source.placement(row)
        scale = np.array([placement.valid_width / placement.width,
                          placement.valid_height / placement.height] * 2)
        mine = [a for a in truth["annotations"] if a["image_id"] == source.image_id(row)]
        mine.sort(key=lambda a: -a["iscrowd"])
        for slot, annotation in enumerate(mine):
            x, y, w, h = annotation["bbox"]
            outputs["boxes"][row, slot] = np.array([x, y, x + w, y + h]) * scale
            outputs["scores"][row, slot] = 0.9 - 0.1 * slot
            outputs["classes"][row, slot] = labels[annotation["category_id"]]
            outputs["valid"][row, slot] = True
    evaluation.add({k: jnp.asarray(v) for k, v in outputs.items()},
                   {"image": np.zeros((2, SIZE, SIZE, 3), np.float32)})
    metrics, _ = evaluation.result()
    assert metrics["box_ap"] == pytest.approx(1.0) and metrics["mask_ap"] == pytest.approx(1.0)


def test_coco_objects_of_different_lengths_are_an_error(coco_dir):
    found = objects(bbox=[[0.0, 0.0, 0.5, 0.5]], labels=[1], crowd=[False])
    found["label"] = np.array([1, 2], np.int64)
    image = np.zeros((8, 8, 3), np.uint8)
    config = data_config("mask_rcnn_coco_tfds.py", tfds_name="coco/2017", download=False)
    with mocked_tfds({"train": [coco_example(image, found)]}, coco_dir):
        source = pipeline.load_split(config, "train")
    with pytest.raises(ValueError, match="different lengths"):
        source[0]


def test_coco_prepared_with_other_label_names_is_an_error(tmp_path):
    names = list(catalog.COCO_CLASS_NAMES[1:])
    names[0], names[1] = names[1], names[0]
    write_coco_metadata(str(tmp_path), "coco/2017", names)
    config = data_config("mask_rcnn_coco_tfds.py", tfds_name="coco/2017", download=False)
    with (
        mocked_tfds({}, str(tmp_path)),
        pytest.raises(ValueError, match="are not the 80 classes"),
    ):
        pipeline.load_split(config, "train")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="needs TensorFlow to be missing"
)
def test_unprepared_coco_without_tensorflow_says_how_to_prepare(tmp_path):
    config = data_config("mask_rcnn_coco_tfds.py", tfds_name="coco/2017", data_dir=str(tmp_path))
    with mocked_tfds({}, str(tmp_path)), pytest.raises(ValueError) as error:
        pipeline.load_split(config, "train")
    message = str(error.value)
    assert "needs TensorFlow" in message
    assert f"tfds build coco/2017 --data_dir={tmp_path} --file_format=array_record" in message


# --------------------------------------------------------------------------- end to end


def random_pet_examples(count: int, rng) -> list:
    shapes = rng.integers(24, 64, (count, 2))
    return [pet_example(rng.integers(1, 4, tuple(shape)), rng) for shape in shapes]


def random_panoptic_examples(count: int, rng, first_id: int = 1) -> list:
    """COCO panoptic examples with 1-3 rectangular thing segments each (self-consistent),
    image ids first_id, first_id + 1, ..."""
    examples = []
    for image_id in range(first_id, first_id + count):
        height, width = rng.integers(40, 80, 2)
        segment_ids = np.zeros((height, width), np.int64)
        count_things = int(rng.integers(1, 4))
        for segment in range(1, count_things + 1):
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            segment_ids[top : top + height // 2, left : left + width // 2] = segment
        panoptic = np.stack([segment_ids, 0 * segment_ids, 0 * segment_ids], -1).astype(np.uint8)
        found = objects(
            bbox=np.tile([0.0, 0.0, 0.5, 0.5], (count_things, 1)),
            labels=rng.integers(0, 80, count_things),
            crowd=np.zeros(count_things, bool),
            ids=np.arange(1, count_things + 1),
        )
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        examples.append(coco_example(image, found, panoptic, image_id=image_id))
    return examples


@pytest.mark.slow
def test_unet_pets_trains_and_evaluates(tmp_path):
    rng = np.random.default_rng(5)
    config = load_config_file(os.path.join(CONFIG_DIR, "unet_pets.py"))
    apply_overrides(
        config,
        {
            "data__data_dir": str(tmp_path / "tfds"),
            "data__image_size": SIZE,
            "model__features": (4, 8),
            "batch_size": 8,
            "eval_batch_size": 8,
            "num_train_steps": 4,
            "log_every_steps": 2,
            "eval_every_steps": 4,
            "checkpoint_every_steps": 4,
            "optimizer__warmup_steps": 1,
            "num_prediction_images": 2,
        },
    )
    splits = {"train": random_pet_examples(8, rng), "test": random_pet_examples(5, rng)}
    with mocked_tfds(splits):
        result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 4
    for name in ("miou", "iou/background", "iou/pet", "iou/border", "train_loss"):
        assert np.isfinite(result[name]), name


@pytest.mark.slow
def test_mask_rcnn_coco_trains_and_evaluates(coco_dir, tmp_path):
    rng = np.random.default_rng(6)
    config = load_config_file(os.path.join(CONFIG_DIR, "mask_rcnn_coco_tfds.py"))
    apply_overrides(
        config,
        {
            "data__download": False,
            "data__image_size": 64,
            "data__resize_shorter_side": 48,
            "data__resize_max_longer_side": 64,
            "data__train_shorter_sides": (32, 40, 48),
            "batch_size": 8,
            "eval_batch_size": 8,
            "num_train_steps": 3,
            "log_every_steps": 1,
            "eval_every_steps": 3,
            "checkpoint_every_steps": 3,
            "optimizer__warmup_steps": 1,
            "optimizer__decay_steps": (2,),
            "num_prediction_images": 2,
            "model__pretrained": None,
            "model__backbone": "resnet18",
            "model__backbone_width": 8,
            "model__fpn_channels": 16,
            "model__fast_cpu_ops": True,
            "model__anchor_sizes": (8.0, 16.0, 32.0, 64.0, 128.0),
            "model__rpn_pre_nms_topk_train": 100,
            "model__rpn_pre_nms_topk_test": 100,
            "model__rpn_post_nms_topk_train": 50,
            "model__rpn_post_nms_topk_test": 50,
            "model__rpn_batch_size_per_image": 32,
            "model__roi_batch_size_per_image": 32,
            "model__mask_rois_per_image": 8,
            "model__box_head_dim": 32,
            "model__mask_head_channels": 8,
            "model__detections_per_image": 20,
        },
    )
    splits = {
        "train": random_panoptic_examples(8, rng),
        "validation": random_panoptic_examples(4, rng, first_id=101),
    }
    with mocked_tfds(splits, coco_dir):
        result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 3
    assert np.isfinite(result["train_loss"])
    for name in ("box_ap", "mask_ap", "box_ap50", "mask_ap50"):
        assert name in result
