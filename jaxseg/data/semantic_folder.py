"""Semantic folder: a TFDS builder for a folder of images and a folder of PNG label maps.

The layout of VOC (`JPEGImages/` + `SegmentationClass/`) and Cityscapes (`leftImg8bit/` +
`gtFine/`): each image has a single-channel PNG label map of the same size whose pixel values
are class ids 0..K-1 or the ignore label (VOC's 255 object borders, Cityscapes' 255 in its
train-id maps). PNG palette maps (mode P) are read as their palette indices.

Every image needs a label map: for VOC, whose JPEGImages/ also holds images without
one, give a folder with the segmentation subset only (e.g. links to the images that
SegmentationClass/ has maps for).

Images and label maps are found recursively and matched by their path relative to their
folder with extension and optional suffixes removed: with
`image_suffix="_leftImg8bit"` and `label_suffix="_gtFine_labelTrainIds"`,
`aachen/aachen_000000_000019_leftImg8bit.png` pairs with
`aachen/aachen_000000_000019_gtFine_labelTrainIds.png`; files not ending with a given suffix
are not read. Image files: .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp.

Splits: a fraction of the pairs chosen by file-name hash (`jaxseg.data.folders`), or a
folder pair per split (`validation_images`, `validation_labels`: Cityscapes' `leftImg8bit/val`
and `gtFine/val`).

Class names are not stored: they come from the experiment config. Instance fields are empty
(no masks, boxes or labels). Geometry, splits and stored features: `jaxseg.data.folders`;
the padding of each label map holds the ignore label.

Images are read by `jaxseg.data.images.read_rgb` (16-bit images scaled to 8 bits, not
saturated); label maps keep their stored values, 8- or 16-bit, as class ids.

Errors (ValueError naming the files): an image without a label map or a label map without
an image, an unreadable file, a label map that is not single-channel, whose size differs
from its image's, or holding a value that is neither a class id nor the ignore label.

The config name encodes the image size and fit, class count, split fraction and ignore label, and
hashes the absolute folder paths, the suffixes and the relative path, size and modification
time of every image and label map: adding, deleting or rewriting one builds a new dataset.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from jaxseg.data import folders, geometry, shapes
from jaxseg.data.images import IMAGE_EXTENSIONS, load_image, read_rgb
from jaxseg.errors import first_few

LABEL_EXTENSIONS = (".png",)
_LABEL_MODES = ("1", "L", "P", "I", "I;16")
_LISTED = 5


@dataclasses.dataclass(eq=False, kw_only=True)
class SemanticFolderConfig(tfds.core.BuilderConfig):
    """One images folder + label maps folder at one size; build with `semantic_folder_config`."""

    images: str = ""
    labels: str = ""
    image_size: int = 512
    num_classes: int = 2
    validation_fraction: float = folders.DEFAULT_VALIDATION_FRACTION
    ignore_label: int = folders.DEFAULT_IGNORE_LABEL
    image_suffix: str = ""
    label_suffix: str = ""
    resize_shorter_side: int | None = None
    resize_max_longer_side: int | None = None
    validation_images: str | None = None
    validation_labels: str | None = None


def _find_files(directory: str, extensions: tuple, suffix: str) -> dict[str, str]:
    """{key: path relative to `directory`} of the files with `extensions` ending in `suffix`.

    The key is the relative path without extension and suffix.
    """
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            stem, extension = os.path.splitext(name)
            if extension.lower() not in extensions or not stem.endswith(suffix):
                continue
            relative = os.path.relpath(os.path.join(root, name), directory)
            key = os.path.join(os.path.dirname(relative), stem[: len(stem) - len(suffix)])
            if key in found:
                raise ValueError(f"{directory}: {found[key]} and {relative} both match {key!r}")
            found[key] = relative
    return found


def pair_files(images: str, labels: str, image_suffix: str = "", label_suffix: str = ""):
    """(image path, label map path) pairs, relative to their folders, sorted by key.

    Raises:
      ValueError: no image, or an image without a label map or the reverse (listing them).
    """
    image_files = _find_files(images, IMAGE_EXTENSIONS, image_suffix)
    label_files = _find_files(labels, LABEL_EXTENSIONS, label_suffix)
    if not image_files:
        raise ValueError(
            f"images={images!r}: no image file ({', '.join(IMAGE_EXTENSIONS)}) "
            f"ending in {image_suffix!r}"
        )
    unlabelled = image_files.keys() - label_files.keys()
    if unlabelled:
        raise ValueError(
            f"labels={labels!r}: no label map (.png ending in {label_suffix!r}) for "
            f"{len(unlabelled)} image(s) of {images}: {first_few(sorted(unlabelled), _LISTED)}"
        )
    orphans = label_files.keys() - image_files.keys()
    if orphans:
        raise ValueError(
            f"images={images!r}: no image (ending in {image_suffix!r}) for "
            f"{len(orphans)} label map(s) of {labels}: {first_few(sorted(orphans), _LISTED)}"
        )
    return [(image_files[key], label_files[key]) for key in sorted(image_files)]


def semantic_folder_config(
    *,
    images,
    labels,
    image_size: int,
    num_classes: int,
    validation_fraction: float = folders.DEFAULT_VALIDATION_FRACTION,
    ignore_label: int = folders.DEFAULT_IGNORE_LABEL,
    image_suffix: str = "",
    label_suffix: str = "",
    resize_shorter_side: int | None = None,
    resize_max_longer_side: int | None = None,
    validation_images=None,
    validation_labels=None,
) -> SemanticFolderConfig:
    """A validated `SemanticFolderConfig` (absolute paths) named after its parameters.

    With `validation_images` and `validation_labels` (both or neither: Cityscapes'
    `leftImg8bit/val` and `gtFine/val`), the train split is every pair of `images` and
    `labels` and the validation split every pair of the validation folders;
    `validation_fraction` is then not used.

    Raises:
      ValueError: a missing path, unpaired files or an invalid parameter, named at the
        start of the message.
    """
    images = folders.check_path("images", images, directory=True)
    labels = folders.check_path("labels", labels, directory=True)
    if not shapes.is_integer(num_classes) or not 2 <= num_classes < folders.MAX_LABEL:
        raise ValueError(f"num_classes={num_classes!r} must be an int in [2, {folders.MAX_LABEL})")
    folders.check_common_params(image_size, validation_fraction, ignore_label, num_classes)
    fit = geometry.checked_fit(image_size, resize_shorter_side, resize_max_longer_side)
    for field, suffix in (("image_suffix", image_suffix), ("label_suffix", label_suffix)):
        if not isinstance(suffix, str):
            raise ValueError(f"{field}={suffix!r} must be a string")
    folder_pairs = [(images, labels)]
    split_tag = f"v{validation_fraction:g}"
    split_folders = folders.check_split_paths(
        ("validation_images", validation_images, True),
        ("validation_labels", validation_labels, True),
    )
    if split_folders is not None:
        validation_images, validation_labels = split_folders
        folder_pairs.append(split_folders)
        split_tag = "files"
    parts = [image_suffix, label_suffix]
    for field_prefix, (image_folder, label_folder) in zip(("", "validation_"), folder_pairs):
        try:
            pairs = pair_files(image_folder, label_folder, image_suffix, label_suffix)
        except ValueError as error:  # its message starts with "images=" or "labels="
            raise ValueError(f"{field_prefix}{error}") from None
        parts += [image_folder, label_folder]
        parts += [folders.file_stamp(image_folder, image) for image, _ in pairs]
        parts += [folders.file_stamp(label_folder, label) for _, label in pairs]
    digest = folders.fingerprint(*parts)
    return SemanticFolderConfig(
        name=f"s{image_size}{fit.tag}_k{num_classes}_{split_tag}_i{ignore_label}_{digest}",
        description=f"Images in {images} with label maps in {labels}",
        images=images,
        labels=labels,
        image_size=image_size,
        num_classes=num_classes,
        validation_fraction=validation_fraction,
        ignore_label=ignore_label,
        image_suffix=image_suffix,
        label_suffix=label_suffix,
        resize_shorter_side=fit.shorter_side,
        resize_max_longer_side=fit.max_longer_side,
        validation_images=validation_images,
        validation_labels=validation_labels,
    )


def read_label_map(path: str, num_classes: int, ignore_label: int) -> np.ndarray:
    """uint8 [h, w] class ids of the PNG label map at `path` (8- or 16-bit values as stored).

    Raises:
      ValueError: unreadable (`ImageReadError`), not a single-channel image, or a value
        that is neither a class id in 0..num_classes-1 nor `ignore_label` (the message
        lists them).
    """
    label_map = load_image(path)
    if label_map.mode not in _LABEL_MODES:
        raise ValueError(
            f"{path}: a label map must be a single-channel image of class ids (PNG mode L "
            f"or P), got mode {label_map.mode}"
        )
    values = np.asarray(label_map).astype(np.int64)
    invalid = np.unique(values[((values >= num_classes) & (values != ignore_label)) | (values < 0)])
    if invalid.size:
        raise ValueError(
            f"{path}: values {invalid[:10].tolist()} are neither class ids 0..{num_classes - 1} "
            f"nor the ignore label {ignore_label}"
        )
    return values.astype(np.uint8)


def make_example(
    image_id: int, image_file: str, label_file: str, config, folders_of_split=None
) -> dict:
    """The stored example of one (image, label map) pair, paths relative to their folders
    (`folders_of_split`: (images, labels) folders; None: the config's)."""
    images, labels = folders_of_split or (config.images, config.labels)
    image_path = os.path.join(images, image_file)
    label_path = os.path.join(labels, label_file)
    image = read_rgb(image_path)
    label_map = read_label_map(label_path, config.num_classes, config.ignore_label)
    if label_map.shape != image.shape[:2]:
        raise ValueError(
            f"{label_path} is {label_map.shape[0]}x{label_map.shape[1]} (HxW) but its image "
            f"{image_path} is {image.shape[0]}x{image.shape[1]}"
        )
    fit = geometry.fit_of(config)
    canvas, _ = geometry.fit_image(image, fit)
    return folders.encode_example(
        canvas,
        geometry.fit_nearest(label_map, fit, config.ignore_label),
        np.zeros((fit.canvas, fit.canvas, 0), np.uint8),
        [],
        image_id,
        image_file,
        image.shape[:2],
    )


class SemanticFolder(folders.FolderBuilder):
    """Images and PNG label maps from two local folders (see the module docstring)."""

    code_path = epath.Path(__file__)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        suffixes = (config.image_suffix, config.label_suffix)
        pairs = pair_files(config.images, config.labels, *suffixes)
        if config.validation_images is None:
            splits = folders.split_items(
                list(enumerate(pairs)), [image for image, _ in pairs], config.validation_fraction
            )
            return {split: self._generate_examples(items) for split, items in splits.items()}
        validation = (config.validation_images, config.validation_labels)
        validation_pairs = pair_files(*validation, *suffixes)
        # Ids run on from the train split's: an image id is unique over both.
        numbered = list(enumerate(validation_pairs, start=len(pairs)))
        return {
            "train": self._generate_examples(list(enumerate(pairs))),
            "validation": self._generate_examples(numbered, validation),
        }

    def _generate_examples(self, numbered_pairs: list, folders_of_split=None):
        for image_id, (image_file, label_file) in numbered_pairs:
            yield image_id, make_example(
                image_id, image_file, label_file, self.builder_config, folders_of_split
            )
