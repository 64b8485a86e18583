"""COCO-format folder: a TFDS builder for any local dataset in COCO's instances format.

The source is an instances JSON ("images", "annotations", "categories", as COCO, CVAT,
Label Studio and others write it) and a folder of images whose `file_name`s it lists.

- Categories: ids sorted in increasing order become the contiguous labels 1..K-1; their
  names are kept: `class_names = ("background", name of the smallest id, ...)`, stored in
  the dataset's metadata (`builder.info.metadata["class_names"]`).
- Storage (`jaxseg.data.coco_records`): each record keeps the image file's bytes as they are
  (a JPEG stays a JPEG) and its annotations' masks at the image's own size, so the dataset
  takes about the source files' bytes; examples are fitted to the canvas when read.
  Preparing is reading the JSON once and each file once (decoding it fully, so truncated
  files are found before training), in `num_workers` threads.
- Segmentations: polygons (a list of [x0, y0, x1, y1, ...] lists, rasterized by pycocotools
  and merged), uncompressed RLE (counts a list) and compressed RLE (counts a string).
  Polygons with fewer than 3 points are dropped. Boxes are the tight boxes of the fitted
  masks; the JSON's `bbox` is not read.
- Crowd annotations (`iscrowd` = 1) are not instances: they are left out of masks, boxes
  and labels, as COCO leaves them out of training targets. Their pixels are painted with
  their class in the semantic map. Evaluation scores against the JSON itself, crowd
  regions included (`jaxseg.evaluation.frames.coco_json_frame`), so detections on them are
  ignored as COCO's evaluation ignores them.
- Geometry and splits: see `jaxseg.data.folders` (resize with aspect ratio kept, padding;
  multi-scale training fits the source pixels at each drawn size; the validation split a fraction of the images chosen by file-name hash). Images without
  annotations are kept.

Errors and skips: a JSON that cannot be parsed or lacks the COCO structure (the three lists,
image ids and file names, category ids and names) raises ValueError naming the file. These
are skipped, with one warning per kind naming the first few: images whose file is missing or
unreadable, or whose size differs from the JSON's height/width; annotations referring to an
unknown image or category, without a usable segmentation (empty, only degenerate polygons,
malformed, an RLE of another size) or whose mask has no pixel once resized at the
test-time fit.

Images are read by `jaxseg.data.images.read_rgb` (16-bit images scaled to 8 bits, not
saturated; an unreadable file is skipped with the reason).

The config name encodes the image size and fit (`geometry.Fit.tag`), split fraction and
ignore label, and hashes the absolute paths, the JSON's size and modification time and the
relative path, size and modification time (or absence) of every image the JSON lists:
rewriting the JSON or adding, deleting or rewriting a listed image builds a new dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data import coco_records, folders, geometry, shapes

BACKGROUND = "background"


@dataclasses.dataclass(eq=False, kw_only=True)
class CocoFolderConfig(tfds.core.BuilderConfig):
    """One COCO-format source at one size; build it with `coco_folder_config`."""

    annotations: str = ""
    images: str = ""
    image_size: int = 512
    validation_fraction: float = folders.DEFAULT_VALIDATION_FRACTION
    ignore_label: int = folders.DEFAULT_IGNORE_LABEL
    resize_shorter_side: int | None = None
    resize_max_longer_side: int | None = None
    num_workers: int = 0


def coco_folder_config(
    *,
    annotations,
    images,
    image_size: int,
    validation_fraction: float = folders.DEFAULT_VALIDATION_FRACTION,
    ignore_label: int = folders.DEFAULT_IGNORE_LABEL,
    resize_shorter_side: int | None = None,
    resize_max_longer_side: int | None = None,
    num_workers: int = 0,
) -> CocoFolderConfig:
    """A validated `CocoFolderConfig` (absolute paths) named after its parameters (all but
    `num_workers`: the threads that prepare it, `coco_records.read_sources`).

    Raises:
      ValueError: a missing path or an invalid parameter, named at the start of the
        message, or a JSON without the COCO structure (naming the file).
    """
    annotations = folders.check_path("annotations", annotations, directory=False)
    images = folders.check_path("images", images, directory=True)
    folders.check_common_params(image_size, validation_fraction, ignore_label, num_classes=1)
    fit = geometry.checked_fit(image_size, resize_shorter_side, resize_max_longer_side)
    try:
        listed = read_coco_json(annotations).images
    except ValueError as error:
        raise ValueError(f"annotations: {error}") from None
    stamps = [folders.file_stamp(images, entry["file_name"]) for entry in listed]
    digest = folders.fingerprint(
        annotations,
        folders.file_stamp(*os.path.split(annotations)),
        images,
        *stamps,
    )
    return CocoFolderConfig(
        name=f"s{image_size}{fit.tag}_v{validation_fraction:g}_i{ignore_label}_{digest}",
        description=f"COCO-format {annotations} with images in {images}",
        annotations=annotations,
        images=images,
        image_size=image_size,
        validation_fraction=validation_fraction,
        ignore_label=ignore_label,
        resize_shorter_side=fit.shorter_side,
        resize_max_longer_side=fit.max_longer_side,
        num_workers=num_workers,
    )


# --------------------------------------------------------------------------- the JSON


@dataclasses.dataclass(frozen=True)
class CocoJson:
    """The parts of a COCO instances JSON this builder reads.

    images: the image dicts, in file order (each has an int "id" and a str "file_name").
    annotations: the raw annotation entries, in file order (checked while building).
    categories: the category dicts, by increasing id.
    labels: category id -> contiguous label 1..K-1.
    class_names: K names, "background" first, then the category names by id.
    """

    images: list
    annotations: list
    categories: list
    labels: dict
    class_names: tuple


def _json_list(data: dict, key: str, path: str) -> list:
    if key not in data:
        raise ValueError(f"{path}: no {key!r} list; not a COCO instances JSON")
    if not isinstance(data[key], list):
        raise ValueError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data[key]


def _check_entries(entries: list, fields: dict, key: str, path: str) -> None:
    """ValueError unless every entry is a dict with `fields` (name -> type) and unique ids."""
    seen = set()
    for position, entry in enumerate(entries):
        for field, kind in fields.items():
            value = entry.get(field) if isinstance(entry, dict) else None
            valid = shapes.is_integer(value) if kind is int else isinstance(value, kind)
            if not valid:
                raise ValueError(
                    f"{path}: {key}[{position}] needs a {kind.__name__} {field!r}, got {entry!r}"
                )
        if entry["id"] in seen:
            raise ValueError(f"{path}: {key} id {entry['id']} is used twice")
        seen.add(entry["id"])


def read_coco_json(path: str) -> CocoJson:
    """Parses and checks the structure of a COCO instances JSON.

    Raises:
      ValueError: the file is not JSON or not COCO-shaped (message names the file).
    """
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    images = _json_list(data, "images", path)
    annotations = _json_list(data, "annotations", path)
    categories = _json_list(data, "categories", path)
    _check_entries(images, {"id": int, "file_name": str}, "images", path)
    _check_entries(categories, {"id": int, "name": str}, "categories", path)
    if not categories:
        raise ValueError(f"{path}: 'categories' is empty")
    if len(categories) >= folders.MAX_LABEL:
        raise ValueError(
            f"{path}: {len(categories)} categories; at most {folders.MAX_LABEL - 1} fit"
        )
    categories = sorted(categories, key=lambda category: category["id"])
    names = [category["name"] for category in categories]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: category names used twice: {duplicates}")
    return CocoJson(
        images=images,
        annotations=annotations,
        categories=categories,
        labels={category["id"]: label for label, category in enumerate(categories, 1)},
        class_names=(BACKGROUND, *names),
    )


def read_class_names(path: str) -> tuple[str, ...]:
    """("background", category names by increasing id) of a COCO instances JSON."""
    return read_coco_json(path).class_names


def check_ignore_label(ignore_label: int, class_names, path: str) -> None:
    """ValueError if `ignore_label` is one of the class ids 0..K-1 of the JSON at `path`."""
    if ignore_label < len(class_names):
        raise ValueError(
            f"ignore_label={ignore_label!r} is a class id: {path} has {len(class_names)} "
            f"classes (ids 0..{len(class_names) - 1})"
        )


# --------------------------------------------------------------------------- examples


def _annotations_by_image(coco: CocoJson, report: folders.SkipReport) -> dict[int, list]:
    """The usable-looking annotations of each image id, in file order."""
    by_image = {image["id"]: [] for image in coco.images}
    for position, annotation in enumerate(coco.annotations):
        if not isinstance(annotation, dict):
            report.add("malformed annotations", f"annotations[{position}]")
            continue
        name = f"annotation {annotation.get('id', f'at position {position}')}"
        if annotation.get("image_id") not in by_image:
            report.add(
                "annotations of unknown images", f"{name}: image_id {annotation.get('image_id')!r}"
            )
        elif annotation.get("category_id") not in coco.labels:
            report.add(
                "annotations of unknown categories",
                f"{name}: category_id {annotation.get('category_id')!r}",
            )
        else:
            by_image[annotation["image_id"]].append(annotation)
    return by_image


def features() -> tfds.features.FeaturesDict:
    """The stored features: the records of `jaxseg.data.coco_records`."""
    return tfds.features.FeaturesDict(
        {
            "image_file": tfds.features.Tensor(shape=(), dtype=np.object_),
            "mask_rles": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "crowd": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "image_id": tfds.features.Scalar(dtype=np.int64),
            "file_name": tfds.features.Text(),
            "height": tfds.features.Scalar(dtype=np.int64),
            "width": tfds.features.Scalar(dtype=np.int64),
        }
    )


class CocoFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A local COCO-format dataset (see the module docstring)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "The source image's height and width.",
        "2.0.0": "The source files' bytes and the annotations in the images' own pixels.",
    }
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=features(), metadata=tfds.core.MetadataDict()
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        coco = read_coco_json(config.annotations)
        check_ignore_label(config.ignore_label, coco.class_names, config.annotations)
        self.info.metadata["class_names"] = list(coco.class_names)
        report = folders.SkipReport(config.annotations)
        by_image = _annotations_by_image(coco, report)
        entries = []
        for entry in coco.images:
            if os.path.isfile(os.path.join(config.images, entry["file_name"])):
                entries.append(entry)
            else:
                report.add(
                    "images whose file is missing", os.path.join(config.images, entry["file_name"])
                )
        report.warn()
        splits = folders.split_items(
            entries, [entry["file_name"] for entry in entries], config.validation_fraction
        )
        fit = geometry.fit_of(config)
        return {
            split: self._generate_examples(
                [(entry, by_image[entry["id"]], config.images, fit, coco.labels) for entry in items]
            )
            for split, items in splits.items()
        }

    def _generate_examples(self, jobs: list):
        report = folders.SkipReport(self.builder_config.annotations)
        for record, skips in coco_records.read_sources(jobs, self.builder_config.num_workers):
            for reason, item in skips:
                report.add(reason, item)
            if record is not None:
                yield record["image_id"], record
        report.warn()
