"""The image reader (jaxseg.data.images.read_rgb) on files the tests write.

Each expectation is computed with numpy from the array that was saved: 16-bit grey
round(v / 257), mode F round(255 v), CMYK (255 - C)(255 - K) / 255 rounded, palettes looked
up by index, alpha dropped.
"""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import coco_folder, folders, pipeline, semantic_folder, storage
from jaxseg.data.images import ImageReadError, read_rgb
from jaxseg.data.sources import coco_folder as coco_source
from jaxseg.data.sources import semantic_folder as semantic_source
from tests import test_coco_folder, test_semantic_folder

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 10), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (6, 10), dtype=np.uint8)
BITS = RNG.random((6, 10)) < 0.5
# A 16-bit gradient over the whole range: 0, 257, ... , 65535 and everything between.
GRADIENT_16 = np.linspace(0, 65535, 64 * 128).round().astype(np.uint16).reshape(64, 128)
UNIT_FLOATS = RNG.random((6, 10)).astype(np.float32)
CMYK = RNG.integers(0, 256, (6, 10, 4), dtype=np.uint8)
PALETTE = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
INDICES = RNG.integers(0, 256, (6, 10), dtype=np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1).astype(np.uint8)


def _palette_image(**info) -> Image.Image:
    image = Image.fromarray(INDICES, "L").convert("P")
    image.putpalette(PALETTE.ravel().tolist())
    image.info.update(info)
    return image


def _save(image: Image.Image, path, **options) -> str:
    image.save(path, **options)
    return str(path)


WRITTEN_AND_EXPECTED = {
    "L png": (lambda p: _save(Image.fromarray(GREY), p / "a.png"), _grey(GREY)),
    "1 png": (lambda p: _save(Image.fromarray(BITS), p / "a.png"), _grey(BITS * 255)),
    "LA png": (
        lambda p: _save(Image.fromarray(np.stack([GREY, ALPHA], -1), "LA"), p / "a.png"),
        _grey(GREY),
    ),
    "RGB png": (lambda p: _save(Image.fromarray(RGB), p / "a.png"), RGB),
    "RGB tiff": (lambda p: _save(Image.fromarray(RGB), p / "a.tif"), RGB),
    "RGBA png": (
        lambda p: _save(Image.fromarray(np.dstack([RGB, ALPHA])), p / "a.png"),
        RGB,
    ),
    "P png": (lambda p: _save(_palette_image(), p / "a.png"), PALETTE[INDICES]),
    "P png, one transparent index": (
        lambda p: _save(_palette_image(), p / "a.png", transparency=7),
        PALETTE[INDICES],
    ),
    "P png, transparency bytes": (
        lambda p: _save(_palette_image(), p / "a.png", transparency=bytes(range(0, 256))),
        PALETTE[INDICES],
    ),
    "CMYK tiff": (
        lambda p: _save(Image.fromarray(CMYK, "CMYK"), p / "a.tif"),
        np.rint((255.0 - CMYK[..., :3]) * (255.0 - CMYK[..., 3:]) / 255.0).astype(np.uint8),
    ),
    "I;16 png": (
        lambda p: _save(Image.fromarray(GRADIENT_16), p / "a.png"),
        _grey(np.rint(GRADIENT_16 / 257.0)),
    ),
    "I;16 tiff": (
        lambda p: _save(Image.fromarray(GRADIENT_16), p / "a.tif"),
        _grey(np.rint(GRADIENT_16 / 257.0)),
    ),
    "I;16B tiff": (
        lambda p: _save(Image.fromarray(GRADIENT_16.astype(">u2")), p / "a.tif"),
        _grey(np.rint(GRADIENT_16 / 257.0)),
    ),
    "I tiff": (
        lambda p: _save(Image.fromarray(GRADIENT_16.astype(np.int32)), p / "a.tif"),
        _grey(np.rint(GRADIENT_16 / 257.0)),
    ),
    "F tiff": (
        lambda p: _save(Image.fromarray(UNIT_FLOATS), p / "a.tif"),
        _grey(np.rint(UNIT_FLOATS.astype(np.float64) * 255.0)),
    ),
    "multi-page tiff": (
        lambda p: _save(
            Image.fromarray(RGB), p / "a.tif", save_all=True, append_images=[Image.fromarray(GREY)]
        ),
        RGB,
    ),
}


@pytest.mark.parametrize("kind", WRITTEN_AND_EXPECTED)
def test_each_kind_of_file_gives_the_numpy_expectation(tmp_path, kind):
    write, expected = WRITTEN_AND_EXPECTED[kind]
    path = write(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = read_rgb(path)
    assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
    np.testing.assert_array_equal(pixels, expected)


def test_the_mode_a_16_bit_file_opens_in(tmp_path):
    """The cases above reach the 16-bit branches: PIL opens them as I;16 and I;16B."""
    png = _save(Image.fromarray(GRADIENT_16), tmp_path / "a.png")
    tiff = _save(Image.fromarray(GRADIENT_16.astype(">u2")), tmp_path / "b.tif")
    assert [Image.open(path).mode for path in (png, tiff)] == ["I;16", "I;16B"]


def test_16_bit_gradient_keeps_its_gradient(tmp_path):
    pixels = read_rgb(_save(Image.fromarray(GRADIENT_16), tmp_path / "a.png"))[..., 0]
    # PIL's convert("RGB") clips at 255: all but the 2 smallest of 8192 values are white.
    saturated = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))[..., 0]
    assert (saturated == 255).mean() > 0.99
    assert pixels.min() == 0 and pixels.max() == 255
    assert len(np.unique(pixels)) == 256
    assert (np.diff(pixels.ravel().astype(int)) >= 0).all()
    assert (pixels == 255).mean() < 0.01
    # v = 257 k + r goes to k for r <= 128 and k + 1 above.
    steps = _save(_array_image([[0, 128, 129, 257, 65535]], np.uint16), tmp_path / "b.png")
    assert read_rgb(steps)[0, :, 0].tolist() == [0, 0, 1, 1, 255]


def _text_file(path) -> str:
    path.write_text("not an image\n")
    return str(path)


def _array_image(values, dtype) -> Image.Image:
    return Image.fromarray(np.array(values, dtype))


def _truncated_png(path) -> str:
    _save(Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize(
    "write, message",
    [
        (_text_file, r"cannot read the image \(UnidentifiedImageError: cannot identify"),
        (_truncated_png, r"cannot read the image \(OSError: image file is truncated"),
        (
            lambda p: _save(Image.fromarray(RGB, "RGB").convert("LAB"), p.with_suffix(".tif")),
            r"unsupported image mode LAB",
        ),
        (
            lambda p: _save(_array_image([[-3, 70000]], np.int32), p.with_suffix(".tif")),
            r"mode I\) image must hold values in 0\.\.65535, got -3\.\.70000",
        ),
        (
            lambda p: _save(_array_image([[0, 2.5]], np.float32), p.with_suffix(".tif")),
            r"mode F\) image must hold values in \[0, 1\], got 0\.\.2\.5",
        ),
    ],
    ids=["not an image", "truncated", "unknown mode", "I out of range", "F out of range"],
)
def test_unreadable_file_is_a_one_line_error_naming_it(tmp_path, write, message):
    path = write(tmp_path / "bad.png")
    with pytest.raises(ImageReadError, match=message) as caught:
        read_rgb(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert isinstance(caught.value, ValueError)


def _canvas(pixels: np.ndarray, size: int) -> np.ndarray:
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[: pixels.shape[0], : pixels.shape[1]] = pixels
    return canvas


def _gradient(offset: int) -> np.ndarray:
    """16 x 32 uint16 gradient over 0..65535 (rolled by `offset` columns)."""
    values = np.linspace(0, 65535, 16 * 32).round().astype(np.uint16).reshape(16, 32)
    return np.roll(values, offset, axis=1)


def _examples_by_name(builder_class, folder_config, data_config) -> dict:
    """{file name: the decoded example} over both splits (file names from the records)."""
    builder = storage.prepare(builder_class, folder_config, data_config.data_dir)
    examples = {}
    for split in folders.SPLITS:
        source = pipeline.load_split(data_config, split)
        records = builder.as_data_source(split=split)
        for index in range(len(source)):
            examples[records[index]["file_name"].decode()] = source[index]
    return examples


def test_semantic_folder_of_16_bit_images_and_label_maps(tmp_path):
    """16 x 32 at size 32: stored unresized, so the image is round(v / 257) exactly; the
    16-bit label map (mode I;16) keeps its class ids."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    label_map = np.zeros((16, 32), np.uint16)
    label_map[2:9, 5:20] = 2
    label_map[:, 31] = 255
    for offset, name in enumerate(("a.png", "b.tif")):
        _save(Image.fromarray(_gradient(offset)), images / name)
        _save(Image.fromarray(label_map), labels / f"{os.path.splitext(name)[0]}.png")
    assert Image.open(labels / "a.png").mode == "I;16"
    data_config = test_semantic_folder.folder_data_config(
        str(images), str(labels), tmp_path / "tfds", validation_fraction=0.5
    )
    examples = _examples_by_name(
        semantic_folder.SemanticFolder,
        semantic_source.semantic_folder_config_from_data_config(data_config),
        data_config,
    )
    for offset, name in enumerate(("a.png", "b.tif")):
        expected = _grey(np.rint(_gradient(offset) / 257.0))
        np.testing.assert_array_equal(examples[name]["image"], _canvas(expected, 32))
        assert (examples[name]["image"][:16] == 255).mean() < 0.01
        semantic = np.full((32, 32), 255, np.int32)
        semantic[:16] = label_map
        np.testing.assert_array_equal(examples[name]["semantic"], semantic)


def test_coco_folder_of_16_bit_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for offset, name in enumerate(("a.png", "b.tif")):
        _save(Image.fromarray(_gradient(offset)), images / name)
        entries.append({"id": offset + 1, "file_name": name, "height": 16, "width": 32})
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[2, 2, 12, 2, 12, 9, 2, 9]],
        },
    ]
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    path = tmp_path / "instances.json"
    path.write_text(
        json.dumps({"images": entries, "annotations": annotations, "categories": categories})
    )
    data_config = test_coco_folder.folder_data_config(
        str(path), str(images), tmp_path / "tfds", validation_fraction=0.5
    )
    examples = _examples_by_name(
        coco_folder.CocoFolder,
        coco_source.coco_folder_config_from_data_config(data_config),
        data_config,
    )
    for offset, name in enumerate(("a.png", "b.tif")):
        expected = _grey(np.rint(_gradient(offset) / 257.0))
        np.testing.assert_array_equal(examples[name]["image"], _canvas(expected, 32))
    assert examples["a.png"]["labels"].tolist() == [1]
