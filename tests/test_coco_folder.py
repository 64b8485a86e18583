"""The COCO-format folder dataset (jaxseg.data.coco_folder) on a folder the tests write.

Expected masks, boxes and semantic maps are worked out by hand from the geometry: the
longer side is resized to S, nearest-neighbour output pixel i samples input pixel
floor((i + 0.5) · h / h'), and a polygon with integer corners covers the pixels
[x0, x1) x [y0, y1) (pycocotools' convention: pixel (x, y) spans [x, x + 1) x [y, y + 1)).
"""

import hashlib
import json
import os
import warnings

import ml_collections
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from jaxseg.data import (
    batching,
    coco_folder,
    coco_json,
    coco_segmentation,
    folders,
    pipeline,
    storage,
)
from jaxseg.config_files import load_config_file
from jaxseg.config_validation import validate_config
from jaxseg.data.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from jaxseg.data.images import read_rgb
from jaxseg.data.sources import coco_folder as coco_source

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
SIZE = 32
IGNORE = 255
CLASS_NAMES = ("background", "cat", "dog")  # category ids 3 and 7
CAT, DOG = 1, 2
# (height, width) of each image file; "d.png" has no annotation.
IMAGE_SHAPES = {"a.png": (16, 32), "b.png": (64, 32), "c.png": (8, 8), "d.png": (10, 20)}
COLOURS = {"b.png": (200, 10, 60), "c.png": (5, 120, 250), "d.png": (90, 90, 30)}


def _rectangle_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rectangle_mask(shape, rows, columns):
    mask = np.zeros(shape, np.uint8)
    mask[rows[0] : rows[1], columns[0] : columns[1]] = 1
    return mask


def _uncompressed_counts(mask):
    """COCO's uncompressed RLE counts: runs of 0s and 1s in column-major order, 0s first."""
    flat = mask.T.ravel()
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0] + runs


def _annotation(annotation_id, image_id, category_id, segmentation, iscrowd=0):
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "iscrowd": iscrowd,
        "bbox": [0, 0, 1, 1],  # not read
        "area": 1,
    }


def write_coco_folder(root, *, missing_image=True):
    """Writes images/ and instances.json under `root`; returns (json path, images dir, a).

    `a` is the random content of a.png (the only image not resized at SIZE).
    """
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    rng = np.random.default_rng(0)
    pixels_a = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    for name, (height, width) in IMAGE_SHAPES.items():
        if name == "a.png":
            pixels = pixels_a
        else:
            pixels = np.full((height, width, 3), COLOURS[name], np.uint8)
        Image.fromarray(pixels).save(os.path.join(images_dir, name))
    images = [
        {"id": 10 + index, "file_name": name, "height": shape[0], "width": shape[1]}
        for index, (name, shape) in enumerate(IMAGE_SHAPES.items())
    ]
    if missing_image:
        images.append({"id": 99, "file_name": "missing.png", "height": 8, "width": 8})
    crowd = _rectangle_mask((16, 32), (10, 14), (20, 28))
    dog_b = _rectangle_mask((64, 32), (10, 30), (4, 14))
    dog_b_rle = mask_utils.encode(np.asfortranarray(dog_b))
    annotations = [
        _annotation(1, 10, 3, _rectangle_polygon(2, 3, 10, 9)),
        _annotation(2, 10, 7, {"size": [16, 32], "counts": _uncompressed_counts(crowd)}, iscrowd=1),
        _annotation(3, 11, 7, {"size": [64, 32], "counts": dog_b_rle["counts"].decode()}),
        _annotation(4, 11, 3, []),  # empty polygon list
        _annotation(5, 11, 3, [[1, 1, 2, 2]]),  # fewer than 3 points
        _annotation(6, 11, 3, _rectangle_polygon(0, 0, 1, 1)),  # one pixel: lost at 1/2 scale
        _annotation(7, 11, 42, _rectangle_polygon(0, 0, 8, 8)),  # unknown category
        _annotation(8, 77, 3, _rectangle_polygon(0, 0, 8, 8)),  # unknown image
        _annotation(9, 12, 3, _rectangle_polygon(1, 2, 5, 6)),
        _annotation(10, 12, 7, _rectangle_polygon(3, 4, 8, 8)),
    ]
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    path = os.path.join(root, "instances.json")
    with open(path, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    return path, images_dir, pixels_a


def folder_data_config(annotations, images, data_dir, **overrides):
    config = ml_collections.ConfigDict(
        {
            "name": "coco_folder",
            "data_dir": str(data_dir),
            "annotations": annotations,
            "images": images,
            "image_size": SIZE,
            "num_classes": len(CLASS_NAMES),
            "class_names": CLASS_NAMES,
            "validation_fraction": 0.25,
            "ignore_label": IGNORE,
            "max_instances": 4,
            "cache_decoded": True,
        }
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The test folder built once: (data config, warnings, {file name: decoded example})."""
    root = tmp_path_factory.mktemp("coco")
    annotations, images, pixels_a = write_coco_folder(str(root))
    data_config = folder_data_config(annotations, images, root / "tfds")
    with pytest.warns(UserWarning) as caught:
        sources = {split: pipeline.load_split(data_config, split) for split in folders.SPLITS}
    builder = storage.prepare(
        coco_folder.CocoFolder,
        coco_source.coco_folder_config_from_data_config(data_config),
        data_config.data_dir,
    )
    examples, splits = {}, {}
    for split, source in sources.items():
        records = builder.as_data_source(split=split)
        for index in range(len(source)):
            name = records[index]["file_name"].decode()
            examples[name] = source[index]
            splits[name] = split
    messages = [str(warning.message) for warning in caught]
    return data_config, messages, examples, splits, pixels_a, builder


def _expected_semantic(resized_shape, painted):
    semantic = np.full((SIZE, SIZE), IGNORE, np.int32)
    semantic[: resized_shape[0], : resized_shape[1]] = 0
    for label, mask in painted:
        semantic[mask.astype(bool)] = label
    return semantic


def _assert_instances(example, masks, boxes, labels):
    np.testing.assert_array_equal(example["labels"], np.array(labels, np.int32))
    np.testing.assert_array_equal(example["boxes"], np.array(boxes, np.float32).reshape(-1, 4))
    expected = np.array(masks, np.uint8).reshape(-1, SIZE, SIZE)
    np.testing.assert_array_equal(example["masks"], expected)
    assert example["masks"].dtype == np.uint8 and example["boxes"].dtype == np.float32


def test_splits_hold_every_readable_image_validation_by_name_hash(built):
    _, _, examples, splits, _, _ = built
    assert sorted(examples) == sorted(IMAGE_SHAPES)
    # validation_fraction 0.25 of 4 images: the one whose name has the smallest SHA-256.
    first = min(IMAGE_SHAPES, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    assert [name for name, split in splits.items() if split == "validation"] == [first]


def test_class_names_from_categories_sorted_by_id(built):
    _, _, _, _, _, builder = built
    assert tuple(builder.info.metadata["class_names"]) == CLASS_NAMES


def test_unresized_image_with_polygon_and_crowd_rle(built):
    _, _, examples, _, pixels_a, _ = built
    example = examples["a.png"]  # 16 x 32: scale 1, padded below
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:16] = pixels_a
    np.testing.assert_array_equal(example["image"], image)
    cat = _rectangle_mask((SIZE, SIZE), (3, 9), (2, 10))
    _assert_instances(example, [cat], [[2, 3, 10, 9]], [CAT])  # the crowd dog is no instance
    crowd = _rectangle_mask((SIZE, SIZE), (10, 14), (20, 28))
    semantic = _expected_semantic((16, 32), [(CAT, cat), (DOG, crowd)])
    np.testing.assert_array_equal(example["semantic"], semantic)


def test_halved_image_with_compressed_rle(built):
    _, _, examples, _, _, _ = built
    example = examples["b.png"]  # 64 x 32 -> 32 x 16; output pixel i samples input 2i + 1
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :16] = COLOURS["b.png"]
    np.testing.assert_array_equal(example["image"], image)
    # Input rows 10..29 -> output rows 5..14 (2i + 1 in [10, 29]); columns 4..13 -> 2..6.
    dog = _rectangle_mask((SIZE, SIZE), (5, 15), (2, 7))
    _assert_instances(example, [dog], [[2, 5, 7, 15]], [DOG])
    np.testing.assert_array_equal(example["semantic"], _expected_semantic((32, 16), [(DOG, dog)]))


def test_enlarged_image_keeps_overlapping_masks(built):
    _, _, examples, _, _, _ = built
    example = examples["c.png"]  # 8 x 8 -> 32 x 32; output pixel i samples input i // 4
    np.testing.assert_array_equal(
        example["image"], np.full((SIZE, SIZE, 3), COLOURS["c.png"], np.uint8)
    )
    cat = _rectangle_mask((SIZE, SIZE), (8, 24), (4, 20))  # input rows 2..5, columns 1..4
    dog = _rectangle_mask((SIZE, SIZE), (16, 32), (12, 32))  # input rows 4..7, columns 3..7
    assert (cat & dog).any()
    _assert_instances(example, [cat, dog], [[4, 8, 20, 24], [12, 16, 32, 32]], [CAT, DOG])
    semantic = _expected_semantic((32, 32), [(CAT, cat), (DOG, dog)])
    np.testing.assert_array_equal(example["semantic"], semantic)


def test_image_without_annotations_is_kept_empty(built):
    _, _, examples, _, _, _ = built
    example = examples["d.png"]  # 10 x 20 -> 16 x 32
    assert example["image"][:16].min() > 0 and not example["image"][16:].any()
    _assert_instances(example, [], [], [])
    np.testing.assert_array_equal(example["semantic"], _expected_semantic((16, 32), []))


def test_skipped_entries_are_warned_by_name(built):
    data_config, messages, _, _, _, _ = built
    text = "\n".join(messages)
    for expected in (
        "images whose file is missing: "
        + os.path.join(os.path.dirname(data_config.annotations), "images", "missing.png"),
        "annotations with empty or degenerate polygons: annotation 4 of b.png; annotation 5",
        "annotations whose mask has no pixel at image_size 32: annotation 6 of b.png",
        "annotations of unknown categories: annotation 7: category_id 42",
        "annotations of unknown images: annotation 8: image_id 77",
    ):
        assert expected in text


def test_batches_have_static_shapes(built):
    data_config, _, _, _, _, _ = built
    source = pipeline.load_split(data_config, "train")
    batch = next(batching.train_batches(source, 2, seed=0, max_instances=4))
    assert batch["image"].shape == (2, SIZE, SIZE, 3)
    assert batch["masks"].shape == (2, 4, SIZE, SIZE)
    assert batch["semantic"].shape == (2, SIZE, SIZE)


def test_class_names_must_match_the_json(built):
    data_config, _, _, _, _, _ = built
    wrong = ml_collections.ConfigDict(data_config.to_dict())
    wrong.class_names = ("background", "dog", "cat")
    with pytest.raises(ValueError, match=r"--config.data.class_names=\('background', 'cat'"):
        pipeline.load_split(wrong, "train")


def test_malformed_json_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    (tmp_path / "images").mkdir()
    data_config = folder_data_config(str(path), str(tmp_path / "images"), tmp_path / "tfds")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        pipeline.load_split(data_config, "train")


@pytest.mark.parametrize(
    "content, message",
    [
        ([], "expected a JSON object"),
        ({"images": [], "annotations": []}, "no 'categories' list"),
        ({"images": [{"id": 1}], "annotations": [], "categories": []}, "needs a str 'file_name'"),
        ({"images": [], "annotations": [], "categories": []}, "'categories' is empty"),
        (
            {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}] * 2},
            "categories id 1 is used twice",
        ),
    ],
)
def test_json_without_coco_structure_is_an_error(tmp_path, content, message):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        coco_json.read_coco_json(str(path))


def test_missing_paths_are_errors_naming_the_field(tmp_path):
    data_config = folder_data_config(None, str(tmp_path), tmp_path / "tfds")
    with pytest.raises(ValueError, match="^annotations is not set"):
        pipeline.load_split(data_config, "train")
    data_config = folder_data_config(str(tmp_path / "no.json"), str(tmp_path), tmp_path)
    with pytest.raises(ValueError, match="^annotations=.*no such file"):
        pipeline.load_split(data_config, "train")


def test_compressed_counts_match_pycocotools_decoding():
    # Runs 3, 70, 27 (> 31, so written in two groups; the third as a difference) of a 10x10.
    mask = np.zeros(100, np.uint8)
    mask[3:73] = 1
    rle = mask_utils.encode(np.asfortranarray(mask.reshape(10, 10).T))
    assert coco_segmentation._compressed_counts(rle["counts"]) == [3, 70, 27]


def test_malformed_rle_is_skipped_not_decoded():
    short = {"size": [4, 4], "counts": [2, 3]}  # covers 5 of 16 pixels
    with pytest.raises(coco_segmentation.Unusable, match="malformed"):
        coco_segmentation.decode_segmentation(short, 4, 4)
    with pytest.raises(coco_segmentation.Unusable, match="another size"):
        coco_segmentation.decode_segmentation({"size": [4, 5], "counts": [20]}, 4, 4)


def test_ignore_label_must_not_be_a_class_id(tmp_path):
    annotations, images, _ = write_coco_folder(str(tmp_path))
    data_config = folder_data_config(annotations, images, tmp_path / "tfds", ignore_label=2)
    with pytest.raises(ValueError, match=r"^ignore_label=2 is a class id: .* has 3 classes"):
        pipeline.load_split(data_config, "train")


def test_rewritten_json_gets_a_new_dataset_name(tmp_path):
    annotations, images, _ = write_coco_folder(str(tmp_path))
    first = coco_folder.coco_folder_config(annotations=annotations, images=images, image_size=32)
    assert first.name.startswith("s32_v0.1_i255_")
    status = os.stat(annotations)
    os.utime(annotations, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    second = coco_folder.coco_folder_config(annotations=annotations, images=images, image_size=32)
    assert second.name != first.name


def _stored_images(data_config) -> tuple[str, dict]:
    """The dataset's config name and {file name: the stored file's pixels}, building the
    dataset if its config has no prepared data yet (skip warnings silenced)."""
    config = coco_source.coco_folder_config_from_data_config(data_config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder = storage.prepare(coco_folder.CocoFolder, config, data_config.data_dir)
    stored = {}
    for split in folders.SPLITS:
        records = builder.as_data_source(split=split)
        for index in range(len(records)):
            name = records[index]["file_name"].decode()
            stored[name] = read_rgb(name, records[index]["image_file"])
    return config.name, stored


def _is_prepared(data_config) -> bool:
    config = coco_source.coco_folder_config_from_data_config(data_config)
    builder = coco_folder.CocoFolder(
        config=config, data_dir=data_config.data_dir, file_format="array_record"
    )
    return builder.is_prepared()


def _write_missing(images):
    Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(os.path.join(images, "missing.png"))


@pytest.mark.parametrize(
    "change, check",
    [
        (lambda images: os.remove(os.path.join(images, "c.png")), lambda s: "c.png" not in s),
        (
            lambda images: Image.fromarray(np.full((16, 32, 3), 9, np.uint8)).save(
                os.path.join(images, "a.png")
            ),
            lambda s: (s["a.png"][:16] == 9).all(),
        ),
        (_write_missing, lambda s: "missing.png" in s and (s["missing.png"] == 40).all()),
    ],
    ids=["delete", "replace", "add the missing image"],
)
def test_changed_images_build_a_new_dataset(tmp_path, change, check):
    annotations, images, _ = write_coco_folder(str(tmp_path))
    data_config = folder_data_config(annotations, images, tmp_path / "tfds")
    first_name, first = _stored_images(data_config)
    assert not check(first)
    change(images)
    assert not _is_prepared(data_config)
    name, stored = _stored_images(data_config)
    assert name != first_name and check(stored)


def test_unchanged_images_reuse_the_built_dataset(tmp_path):
    annotations, images, _ = write_coco_folder(str(tmp_path))
    data_config = folder_data_config(annotations, images, tmp_path / "tfds")
    first_name, _ = _stored_images(data_config)
    assert _is_prepared(data_config)
    assert coco_source.coco_folder_config_from_data_config(data_config).name == first_name


def test_unreadable_image_is_skipped_with_the_reason(tmp_path):
    annotations, images, _ = write_coco_folder(str(tmp_path), missing_image=False)
    with open(os.path.join(images, "d.png"), "w") as file:
        file.write("not a PNG")
    data_config = folder_data_config(annotations, images, tmp_path / "tfds")
    with pytest.warns(UserWarning) as caught:
        sources = [pipeline.load_split(data_config, split) for split in folders.SPLITS]
    path = os.path.join(images, "d.png")
    assert f"skipped 1 unreadable images: {path}: cannot read the image" in "\n".join(
        str(warning.message) for warning in caught
    )
    assert sum(len(source) for source in sources) == 3


def _write_coco_layout(root):
    """COCO's own layout under `root`: annotations/instances_{train,val}2017.json with COCO's
    80 categories, train2017/ (2 images) and val2017/ (1 image)."""
    categories = [
        {"id": category_id, "name": name}
        for category_id, name in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES[1:], strict=True)
    ]
    os.makedirs(os.path.join(root, "annotations"))
    for split, names in (("train2017", ("1.jpg", "2.jpg")), ("val2017", ("3.jpg",))):
        os.makedirs(os.path.join(root, split))
        images, annotations = [], []
        for name in names:
            image_id = int(name[0])
            Image.fromarray(np.full((30, 40, 3), 10 * image_id, np.uint8)).save(
                os.path.join(root, split, name)
            )
            images.append({"id": image_id, "file_name": name, "height": 30, "width": 40})
            polygon = _rectangle_polygon(2, 3, 20, 25)
            annotations.append(_annotation(image_id, image_id, 90, polygon))
        path = os.path.join(root, "annotations", f"instances_{split}.json")
        with open(path, "w") as file:
            json.dump(
                {"images": images, "annotations": annotations, "categories": categories}, file
            )


def test_mask_rcnn_coco_reads_cocos_own_layout_under_its_root(tmp_path):
    _write_coco_layout(str(tmp_path / "coco"))
    config = load_config_file(os.path.join(CONFIG_DIR, "mask_rcnn_coco.py"))
    config.model.pretrained = None  # its ImageNet file is not here
    data_config = config.data
    data_config.update({"data_dir": str(tmp_path / "tfds"), "image_size": 64,
                        "resize_shorter_side": 48, "resize_max_longer_side": 64,
                        "train_shorter_sides": None})
    with pytest.raises(ValueError, match="^root is not set and annotations='annotations/"):
        pipeline.load_split(data_config, "train")
    data_config.root = str(tmp_path / "coco")
    validate_config(config)
    sources = {split: pipeline.load_split(data_config, split) for split in folders.SPLITS}
    ids = {split: [source.image_id(i) for i in range(len(source))]
           for split, source in sources.items()}
    assert ids == {"train": [1, 2], "validation": [3]}
    # Category 90 (toothbrush) is COCO's last: label 80.
    np.testing.assert_array_equal(sources["validation"][0]["labels"], [80])
