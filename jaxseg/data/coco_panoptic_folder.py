"""COCO-panoptic-format folder: a TFDS builder for any local dataset in COCO's panoptic format.

The source is a panoptic JSON ("images", "annotations" with one PNG `file_name` and the
`segments_info` of each image, "categories" with `isthing`), the folder of the images and
the folder of the PNGs (segment id = R + 256·G + 256²·B, `jaxseg.data.panoptic_format`).

- Categories, by increasing id: the things become the labels 1..K-1 (`class_names =
  ("background", thing names...)`), the stuff the semantic labels 1..N-1
  (`stuff_class_names = ("thing", stuff names...)`); both are in the dataset's metadata.
- Stored fields are the folder datasets' (`jaxseg.data.folders`): `semantic` holds the
  semantic head's target (0 on every thing pixel, crowd ones included, as detectron2's
  Panoptic FPN targets; the stuff label on stuff pixels; the ignore label on VOID, on pixels
  of ids the JSON does not list, and on the padding); the non-crowd thing segments are the
  instances (masks, tight boxes, labels).
- Geometry and splits as in the other folder datasets. Evaluation scores against the
  JSON and PNGs themselves, at the source size (`panoptic_frame`).

A JSON without this structure raises ValueError naming the file. Skipped, with one warning
per kind: images without a file or annotation, unreadable images or PNGs, and PNGs whose
size differs from their image's.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data import folders, geometry, panoptic_format, shapes
from jaxseg.data.images import ImageReadError, read_rgb
from jaxseg.ops.panoptic_fusion import THING_LABEL


@dataclasses.dataclass(eq=False, kw_only=True)
class CocoPanopticFolderConfig(tfds.core.BuilderConfig):
    """One COCO-panoptic-format source at one size; build it with `coco_panoptic_folder_config`."""

    annotations: str = ""
    images: str = ""
    panoptic_masks: str = ""
    image_size: int = 512
    validation_fraction: float = folders.DEFAULT_VALIDATION_FRACTION
    ignore_label: int = folders.DEFAULT_IGNORE_LABEL
    resize_shorter_side: int | None = None
    resize_max_longer_side: int | None = None


@dataclasses.dataclass(frozen=True)
class PanopticJson:
    """The parts of a panoptic JSON the builder reads.

    images: image dicts in file order (int "id", str "file_name"); annotations: image id ->
    its annotation; categories: by increasing id; labels: thing category id -> label
    1..K-1; stuff_labels: stuff category id -> semantic label 1..N-1.
    """

    images: list
    annotations: dict
    categories: list
    labels: dict
    stuff_labels: dict

    @property
    def class_names(self) -> tuple[str, ...]:
        """("background", the thing names by increasing id)."""
        by_id = {c["id"]: c["name"] for c in self.categories}
        return ("background", *(by_id[i] for i in self.labels))

    @property
    def stuff_class_names(self) -> tuple[str, ...]:
        """("thing", the stuff names by increasing id)."""
        by_id = {c["id"]: c["name"] for c in self.categories}
        return ("thing", *(by_id[i] for i in self.stuff_labels))


def read_panoptic_json(path: str) -> PanopticJson:
    """Parses and checks a COCO panoptic ground-truth JSON (ValueError naming the file)."""
    data = panoptic_format.load_panoptic_json(path, ground_truth=True)
    images = data.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{path}: no 'images' list; not a COCO panoptic ground truth JSON")
    for position, entry in enumerate(images):
        if not (isinstance(entry, dict) and isinstance(entry.get("file_name"), str) and shapes.is_integer(entry.get("id"))):
            raise ValueError(f"{path}: images[{position}] needs an int 'id' and a str 'file_name', got {entry!r}")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if len(categories) >= folders.MAX_LABEL:
        raise ValueError(f"{path}: {len(categories)} categories; at most {folders.MAX_LABEL - 1} fit")
    things = [c["id"] for c in categories if c["isthing"]]
    stuff = [c["id"] for c in categories if not c["isthing"]]
    if not things or not stuff:
        raise ValueError(f"{path}: needs thing and stuff categories, got {len(things)} and {len(stuff)}")
    return PanopticJson(
        images=images,
        annotations={a["image_id"]: a for a in data["annotations"]},
        categories=categories,
        labels={category_id: label for label, category_id in enumerate(things, 1)},
        stuff_labels={category_id: label for label, category_id in enumerate(stuff, 1)},
    )


def coco_panoptic_folder_config(
    *, annotations, images, panoptic_masks, image_size: int,
    validation_fraction: float = folders.DEFAULT_VALIDATION_FRACTION,
    ignore_label: int = folders.DEFAULT_IGNORE_LABEL,
    resize_shorter_side: int | None = None,
    resize_max_longer_side: int | None = None,
) -> CocoPanopticFolderConfig:
    """A validated config (absolute paths) named after its parameters and the stamps of
    the JSON and of every image and PNG it lists.

    Raises:
      ValueError: a missing path or an invalid parameter, named at the start of the
        message, or a JSON without the panoptic structure (naming the file).
    """
    annotations = folders.check_path("annotations", annotations, directory=False)
    images = folders.check_path("images", images, directory=True)
    panoptic_masks = folders.check_path("panoptic_masks", panoptic_masks, directory=True)
    folders.check_common_params(image_size, validation_fraction, ignore_label, num_classes=1)
    fit = geometry.checked_fit(image_size, resize_shorter_side, resize_max_longer_side)
    try:
        coco = read_panoptic_json(annotations)
    except ValueError as error:
        raise ValueError(f"annotations: {error}") from None
    stamps = [folders.file_stamp(images, entry["file_name"]) for entry in coco.images]
    stamps += [folders.file_stamp(panoptic_masks, a["file_name"]) for a in coco.annotations.values()]
    digest = folders.fingerprint(annotations, folders.file_stamp(*os.path.split(annotations)), images,
                                 panoptic_masks, *stamps)
    return CocoPanopticFolderConfig(
        name=f"s{image_size}{fit.tag}_v{validation_fraction:g}_i{ignore_label}_{digest}",
        description=f"COCO panoptic {annotations}, images in {images}, PNGs in {panoptic_masks}",
        annotations=annotations, images=images, panoptic_masks=panoptic_masks, image_size=image_size,
        validation_fraction=validation_fraction, ignore_label=ignore_label,
        resize_shorter_side=fit.shorter_side, resize_max_longer_side=fit.max_longer_side,
    )


def make_example(entry: dict, annotation: dict, config: CocoPanopticFolderConfig, coco: PanopticJson, report):
    """The stored example of image `entry` with its panoptic `annotation`, or None (reported)."""
    path = os.path.join(config.images, entry["file_name"])
    png = os.path.join(config.panoptic_masks, annotation["file_name"])
    try:
        pixels = read_rgb(path)
        ids = panoptic_format.read_id_png(png)
    except (ImageReadError, ValueError) as error:
        report.add("unreadable images or PNGs", str(error))
        return None
    if ids.shape != pixels.shape[:2]:
        report.add("PNGs whose size differs from their image's", f"{png} {ids.shape} vs {pixels.shape[:2]}")
        return None
    fit = geometry.fit_of(config)
    semantic = np.full(ids.shape, config.ignore_label, np.uint8)
    masks, labels = [], []
    for segment in annotation["segments_info"]:
        inside = ids == segment["id"]
        category = segment["category_id"]
        if category in coco.stuff_labels:
            semantic[inside] = coco.stuff_labels[category]
            continue
        semantic[inside] = THING_LABEL
        mask = geometry.fit_nearest(inside.astype(np.uint8), fit, 0)
        if not segment.get("iscrowd", 0) and mask.any():
            masks.append(mask)
            labels.append(coco.labels[category])
    size = fit.canvas
    stacked = np.stack(masks, axis=-1) if masks else np.zeros((size, size, 0), np.uint8)
    canvas, _ = geometry.fit_image(pixels, fit)
    return folders.encode_example(canvas, geometry.fit_nearest(semantic, fit, config.ignore_label), stacked,
                                  labels, entry["id"], entry["file_name"], pixels.shape[:2])


class CocoPanopticFolder(folders.FolderBuilder):
    """A local COCO-panoptic-format dataset (see the module docstring)."""

    code_path = epath.Path(__file__)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        coco = read_panoptic_json(config.annotations)
        unknown = {s["category_id"] for a in coco.annotations.values() for s in a["segments_info"]}
        unknown -= set(coco.labels) | set(coco.stuff_labels)
        if unknown:
            raise ValueError(f"{config.annotations}: segments of unknown category ids {sorted(unknown)}")
        self.info.metadata["class_names"] = list(coco.class_names)
        self.info.metadata["stuff_class_names"] = list(coco.stuff_class_names)
        report = folders.SkipReport(config.annotations)
        entries = []
        for entry in coco.images:
            if entry["id"] not in coco.annotations:
                report.add("images without a panoptic annotation", entry["file_name"])
            elif not os.path.isfile(os.path.join(config.images, entry["file_name"])):
                report.add("images whose file is missing", os.path.join(config.images, entry["file_name"]))
            else:
                entries.append(entry)
        report.warn()
        splits = folders.split_items(entries, [entry["file_name"] for entry in entries], config.validation_fraction)
        return {split: self._generate_examples(items, coco) for split, items in splits.items()}

    def _generate_examples(self, entries: list, coco: PanopticJson):
        report = folders.SkipReport(self.builder_config.annotations)
        for entry in entries:
            example = make_example(entry, coco.annotations[entry["id"]], self.builder_config, coco, report)
            if example is not None:
                yield entry["id"], example
        report.warn()
