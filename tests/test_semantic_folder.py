"""The semantic folder dataset (jaxseg.data.semantic_folder) on folders the tests write.

Expected maps follow from the geometry by hand: the longer side is resized to S, output
pixel i samples input pixel floor((i + 0.5) · h / h'), padding holds the ignore label.
"""

import hashlib
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxseg import train
from jaxseg.config_files import load_config_file
from jaxseg.data import folders, pipeline, semantic_folder, storage
from jaxseg.data.sources import semantic_folder as semantic_source
from tests.test_train import tiny_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

SIZE = 32
IGNORE = 255
CLASS_NAMES = ("background", "road", "car")


def _save_label_map(path, values, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "P":
        image = Image.new("P", (values.shape[1], values.shape[0]))
        image.putdata(values.ravel().tolist())
        image.putpalette([channel for k in range(256) for channel in (k, 255 - k, 0)])
    else:
        image = Image.fromarray(values.astype(np.uint8))
    image.save(path)


def _save_image(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def _label_map_x():
    """16 x 32: rows 0..7 road (1), a car (2) at rows 4..11, columns 10..19, an ignored
    column 31."""
    values = np.zeros((16, 32), np.uint8)
    values[:8] = 1
    values[4:12, 10:20] = 2
    values[:, 31] = IGNORE
    return values


def write_semantic_folder(root):
    """images/{x.png, y.jpg, sub/z.png} and their label maps; returns folders and pixels."""
    images, labels = os.path.join(root, "images"), os.path.join(root, "labels")
    pixels_x = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    _save_image(os.path.join(images, "x.png"), pixels_x)
    _save_label_map(os.path.join(labels, "x.png"), _label_map_x())
    _save_image(os.path.join(images, "y.jpg"), np.full((64, 32, 3), (30, 160, 90), np.uint8))
    values_y = np.zeros((64, 32), np.uint8)
    values_y[10:30, 4:14] = 2
    _save_label_map(os.path.join(labels, "y.png"), values_y, mode="P")
    _save_image(os.path.join(images, "sub", "z.png"), np.full((8, 8, 3), 77, np.uint8))
    values_z = np.zeros((8, 8), np.uint8)
    values_z[1:3, 2:7] = 1
    _save_label_map(os.path.join(labels, "sub", "z.png"), values_z)
    return images, labels, pixels_x


def folder_data_config(images, labels, data_dir, **overrides):
    config = ml_collections.ConfigDict(
        {
            "name": "semantic_folder",
            "data_dir": str(data_dir),
            "images": images,
            "labels": labels,
            "image_size": SIZE,
            "num_classes": len(CLASS_NAMES),
            "class_names": CLASS_NAMES,
            "validation_fraction": 0.34,
            "ignore_label": IGNORE,
            "max_instances": 1,
        }
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{file name: decoded example}, {file name: split}, the random pixels of x.png."""
    root = tmp_path_factory.mktemp("semantic")
    images, labels, pixels_x = write_semantic_folder(str(root))
    data_config = folder_data_config(images, labels, root / "tfds")
    builder = storage.prepare(
        semantic_folder.SemanticFolder,
        semantic_source.semantic_folder_config_from_data_config(data_config),
        data_config.data_dir,
    )
    examples, splits = {}, {}
    for split in folders.SPLITS:
        source = pipeline.load_split(data_config, split)
        records = builder.as_data_source(split=split)
        for index in range(len(source)):
            name = records[index]["file_name"].decode()
            examples[name], splits[name] = source[index], split
    return examples, splits, pixels_x, os.path.join(images, "y.jpg")


def _padded(values, fill=IGNORE):
    semantic = np.full((SIZE, SIZE), fill, np.int32)
    semantic[: values.shape[0], : values.shape[1]] = values
    return semantic


def _assert_no_instances(example):
    assert example["masks"].shape == (0, SIZE, SIZE) and example["masks"].dtype == np.uint8
    assert example["boxes"].shape == (0, 4) and example["labels"].shape == (0,)


def test_pairs_found_recursively_validation_by_name_hash(built):
    examples, splits, _, _ = built
    names = ["sub/z.png", "x.png", "y.jpg"]
    assert sorted(examples) == names
    # validation_fraction 0.34 of 3 images: the one whose name has the smallest SHA-256.
    first = min(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    assert [name for name, split in splits.items() if split == "validation"] == [first]


def test_unresized_pair_keeps_labels_and_ignore(built):
    examples, _, pixels_x, _ = built
    example = examples["x.png"]
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:16] = pixels_x
    np.testing.assert_array_equal(example["image"], image)
    np.testing.assert_array_equal(example["semantic"], _padded(_label_map_x()))
    assert example["semantic"].dtype == np.int32
    _assert_no_instances(example)


def test_halved_jpeg_with_palette_label_map(built):
    examples, _, _, jpeg_path = built
    example = examples["y.jpg"]  # 64 x 32 -> 32 x 16; output pixel i samples input 2i + 1
    decoded = np.asarray(Image.open(jpeg_path).convert("RGB"))
    assert (decoded == decoded[0, 0]).all()
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :16] = decoded[0, 0]
    np.testing.assert_array_equal(example["image"], image)
    values = np.zeros((32, 16), np.int32)
    values[5:15, 2:7] = 2  # input rows 10..29 -> 5..14, columns 4..13 -> 2..6
    np.testing.assert_array_equal(example["semantic"], _padded(values))
    _assert_no_instances(example)


def test_enlarged_pair(built):
    examples, _, _, _ = built
    example = examples["sub/z.png"]  # 8 x 8 -> 32 x 32; output pixel i samples input i // 4
    np.testing.assert_array_equal(example["image"], np.full((SIZE, SIZE, 3), 77, np.uint8))
    values = np.zeros((SIZE, SIZE), np.int32)
    values[4:12, 8:28] = 1  # input rows 1..2, columns 2..6
    np.testing.assert_array_equal(example["semantic"], values)


def test_suffixes_removed_before_matching(tmp_path):
    images, labels = str(tmp_path / "leftImg8bit"), str(tmp_path / "gtFine")
    _save_image(
        os.path.join(images, "aachen", "a_1_leftImg8bit.png"), np.zeros((4, 4, 3), np.uint8)
    )
    _save_image(os.path.join(images, "aachen", "a_2_leftImg8bit.png"), np.ones((4, 4, 3), np.uint8))
    for name in ("a_1", "a_2"):
        for suffix in ("_gtFine_labelTrainIds", "_gtFine_color"):
            _save_label_map(
                os.path.join(labels, "aachen", name + suffix + ".png"), np.zeros((4, 4))
            )
    pairs = semantic_folder.pair_files(images, labels, "_leftImg8bit", "_gtFine_labelTrainIds")
    assert pairs == [
        (
            os.path.join("aachen", f"a_{k}_leftImg8bit.png"),
            os.path.join("aachen", f"a_{k}_gtFine_labelTrainIds.png"),
        )
        for k in (1, 2)
    ]


def test_a_folder_pair_per_split_gives_each_split_all_its_pairs(tmp_path):
    images, labels, _ = write_semantic_folder(str(tmp_path / "train"))
    validation_images = str(tmp_path / "val" / "images")
    validation_labels = str(tmp_path / "val" / "labels")
    _save_image(os.path.join(validation_images, "v.png"), np.full((16, 32, 3), 5, np.uint8))
    _save_label_map(os.path.join(validation_labels, "v.png"), _label_map_x())
    data_config = folder_data_config(
        images, labels, tmp_path / "tfds",
        validation_images=validation_images, validation_labels=validation_labels,
    )
    sources = {split: pipeline.load_split(data_config, split) for split in folders.SPLITS}
    assert [len(sources[split]) for split in folders.SPLITS] == [3, 1]
    # Ids run on over both splits; the validation pair is the one in its own folders.
    ids = {split: [s.image_id(i) for i in range(len(s))] for split, s in sources.items()}
    assert sorted(ids["train"]) == [0, 1, 2] and ids["validation"] == [3]
    np.testing.assert_array_equal(sources["validation"][0]["semantic"], _padded(_label_map_x()))
    name = semantic_source.semantic_folder_config_from_data_config(data_config).name
    assert "_files_" in name
    os.remove(os.path.join(validation_labels, "v.png"))
    with pytest.raises(ValueError, match="^validation_labels=.*no label map"):
        semantic_source.semantic_folder_config_from_data_config(data_config)
    data_config.validation_labels = None
    with pytest.raises(ValueError, match="^validation_labels is not set"):
        semantic_source.semantic_folder_config_from_data_config(data_config)


def test_image_without_label_map_is_an_error(tmp_path):
    images, labels, _ = write_semantic_folder(str(tmp_path))
    os.remove(os.path.join(labels, "sub", "z.png"))
    data_config = folder_data_config(images, labels, tmp_path / "tfds")
    with pytest.raises(ValueError, match=r"^labels=.*no label map .* for 1 image\(s\) .*: sub/z"):
        pipeline.load_split(data_config, "train")


@pytest.mark.parametrize(
    "values, mode, message",
    [
        (np.full((16, 32), 5), "L", r"x\.png: values \[5\] are neither class ids 0\.\.2 nor"),
        (np.zeros((16, 30)), "L", r"x\.png is 16x30 \(HxW\) but its image .*x\.png is 16x32"),
        (np.zeros((16, 32, 3)), "RGB", r"x\.png: a label map must be a single-channel image"),
    ],
)
def test_unusable_label_map_is_an_error_naming_it(tmp_path, values, mode, message):
    images, labels, _ = write_semantic_folder(str(tmp_path))
    _save_label_map(os.path.join(labels, "x.png"), values, mode)
    data_config = folder_data_config(images, labels, tmp_path / "tfds")
    with pytest.raises(ValueError, match=message):
        pipeline.load_split(data_config, "train")


@pytest.mark.slow
def test_unet_trains_and_evaluates_on_the_folders(tmp_path):
    """configs/unet_folder.py's data section with the tiny test U-Net, for 2 steps."""
    images, labels, _ = write_semantic_folder(str(tmp_path))
    config = tiny_config(str(tmp_path / "unused"))
    config.data = load_config_file(os.path.join(CONFIG_DIR, "unet_folder.py")).data
    config.data.update(
        {
            "data_dir": str(tmp_path / "tfds"),
            "images": images,
            "labels": labels,
            "num_classes": len(CLASS_NAMES),
            "class_names": CLASS_NAMES,
            "image_size": 64,
            "validation_fraction": 0.34,
        }
    )
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    config.optimizer.warmup_steps = 1
    config.batch_size = config.eval_batch_size = 2
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    with open(os.path.join(workdir, "metrics.json")) as file:
        metrics = json.load(file)
    assert metrics["step"] == 2
    assert {"miou", "pixel_accuracy", "iou/road", "iou/car", "train_loss"} <= metrics.keys()
    assert np.isfinite(metrics["train_loss"]) and 0.0 <= metrics["pixel_accuracy"] <= 1.0


def _stored(data_config) -> tuple[str, dict]:
    """The dataset's config name and {file name: (stored image, stored semantic map)},
    building the dataset if its config has no prepared data yet."""
    config = semantic_source.semantic_folder_config_from_data_config(data_config)
    builder = storage.prepare(semantic_folder.SemanticFolder, config, data_config.data_dir)
    stored = {}
    for split in folders.SPLITS:
        records = builder.as_data_source(split=split)
        for index in range(len(records)):
            record = records[index]
            stored[record["file_name"].decode()] = (record["image"], record["semantic"][..., 0])
    return config.name, stored


def _is_prepared(data_config) -> bool:
    config = semantic_source.semantic_folder_config_from_data_config(data_config)
    builder = semantic_folder.SemanticFolder(
        config=config, data_dir=data_config.data_dir, file_format="array_record"
    )
    return builder.is_prepared()


def _delete_z(images, labels):
    os.remove(os.path.join(images, "sub", "z.png"))
    os.remove(os.path.join(labels, "sub", "z.png"))


def _replace_x(images, labels):
    _save_image(os.path.join(images, "x.png"), np.full((16, 32, 3), 5, np.uint8))


def _add_w(images, labels):
    _save_image(os.path.join(images, "w.png"), np.full((8, 8, 3), 200, np.uint8))
    _save_label_map(os.path.join(labels, "w.png"), np.ones((8, 8)))


def _relabel_z(images, labels):
    _save_label_map(os.path.join(labels, "sub", "z.png"), np.full((8, 8), 2))


@pytest.mark.parametrize(
    "change, check",
    [
        (_delete_z, lambda stored: sorted(stored) == ["x.png", "y.jpg"]),
        (_replace_x, lambda stored: (stored["x.png"][0][:16] == 5).all()),
        (_add_w, lambda stored: "w.png" in stored and (stored["w.png"][0] == 200).all()),
        (_relabel_z, lambda stored: (stored["sub/z.png"][1] == 2).all()),
    ],
    ids=["delete", "replace image", "add", "rewrite label map"],
)
def test_changed_files_build_a_new_dataset(tmp_path, change, check):
    images, labels, _ = write_semantic_folder(str(tmp_path))
    data_config = folder_data_config(images, labels, tmp_path / "tfds")
    first_name, first = _stored(data_config)
    assert not check(first)
    change(images, labels)
    assert not _is_prepared(data_config)
    name, stored = _stored(data_config)
    assert name != first_name and check(stored)


def test_unchanged_files_reuse_the_built_dataset(tmp_path):
    images, labels, _ = write_semantic_folder(str(tmp_path))
    data_config = folder_data_config(images, labels, tmp_path / "tfds")
    first_name, _ = _stored(data_config)
    assert _is_prepared(data_config)
    assert semantic_source.semantic_folder_config_from_data_config(data_config).name == first_name
