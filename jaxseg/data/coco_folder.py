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
- Geometry: see `jaxseg.data.folders` (resize with aspect ratio kept, padding); multi-scale
  training fits the source pixels at each drawn size.
- Splits: one JSON is split by file-name hash (`folders.validation_mask`); a JSON per split
  (`validation_annotations`, `validation_images`) gives each split all of its JSON's
  images, the categories must be the same in both, and image files listed by both are
  reported. Images without annotations are kept.

Errors and skips: a JSON that cannot be parsed or lacks the COCO structure (the three lists,
image ids and file names, category ids and names) raises ValueError naming the file. These
are skipped, with one warning per kind naming the first few: images whose file is missing or
unreadable, or whose size differs from the JSON's height/width; annotations referring to an
unknown image or category, without a usable segmentation (empty, only degenerate polygons,
malformed, an RLE of another size) or whose mask has no pixel once resized at the
test-time fit.

Images are read by `jaxseg.data.images.read_rgb` (16-bit images scaled to 8 bits, not
saturated; an unreadable file is skipped with the reason).

The config name encodes the image size and fit (`geometry.Fit.tag`), split fraction (or
"files") and ignore label, and hashes the absolute paths, each JSON's size and modification
time and the relative path, size and modification time (or absence) of every image a JSON
lists: rewriting a JSON or adding, deleting or rewriting a listed image builds a new dataset.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data import coco_records, folders, geometry
from jaxseg.data.coco_json import (
    annotations_by_image,
    check_ignore_label,
    read_coco_json,
    summary,
)
from jaxseg.errors import first_few

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
    validation_annotations: str | None = None
    validation_images: str | None = None


MISSING = "images whose file is missing"


def _read_listed(field: str, path: str, images: str):
    """(the `coco_json.summary` of the JSON at `path`, the stamps of the images it lists in
    `images`)."""
    try:
        listed = summary(path)
    except ValueError as error:
        raise ValueError(f"{field}: {error}") from None
    return listed, [folders.file_stamp(images, name) for name in listed.file_names]


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
    validation_annotations=None,
    validation_images=None,
) -> CocoFolderConfig:
    """A validated `CocoFolderConfig` (absolute paths) named after its parameters (all but
    `num_workers`: the threads that prepare it, `coco_records.read_sources`).

    With `validation_annotations` and `validation_images` (both or neither), the train split
    is every image of `annotations` and the validation split every image of
    `validation_annotations`, whose categories must be the same; `validation_fraction` is
    then not used.

    Raises:
      ValueError: a missing path or an invalid parameter, named at the start of the
        message, or a JSON without the COCO structure (naming the file).
    """
    annotations = folders.check_path("annotations", annotations, directory=False)
    images = folders.check_path("images", images, directory=True)
    folders.check_common_params(image_size, validation_fraction, ignore_label, num_classes=1)
    fit = geometry.checked_fit(image_size, resize_shorter_side, resize_max_longer_side)
    train, stamps = _read_listed("annotations", annotations, images)
    parts = [annotations, folders.file_stamp(*os.path.split(annotations)), images, *stamps]
    split_tag = f"v{validation_fraction:g}"
    split_files = folders.check_split_paths(
        ("validation_annotations", validation_annotations, False),
        ("validation_images", validation_images, True),
    )
    if split_files is not None:
        validation_annotations, validation_images = split_files
        validation, stamps = _read_listed(
            "validation_annotations", validation_annotations, validation_images
        )
        if validation.categories != train.categories:
            raise ValueError(
                f"validation_annotations: the categories of {validation_annotations} differ "
                f"from those of {annotations}; both splits need the same ids and names"
            )
        parts += [
            validation_annotations,
            folders.file_stamp(*os.path.split(validation_annotations)),
            validation_images,
            *stamps,
        ]
        split_tag = "files"
    return CocoFolderConfig(
        name=f"s{image_size}{fit.tag}_{split_tag}_i{ignore_label}_{folders.fingerprint(*parts)}",
        description=f"COCO-format {annotations} with images in {images}",
        annotations=annotations,
        images=images,
        image_size=image_size,
        validation_fraction=validation_fraction,
        ignore_label=ignore_label,
        resize_shorter_side=fit.shorter_side,
        resize_max_longer_side=fit.max_longer_side,
        num_workers=num_workers,
        validation_annotations=validation_annotations,
        validation_images=validation_images,
    )


def _present(coco, images: str, report: folders.SkipReport) -> list[dict]:
    """The image entries of `coco` whose file exists in `images` (the others reported)."""
    entries = []
    for entry in coco.images:
        path = os.path.join(images, entry["file_name"])
        if os.path.isfile(path):
            entries.append(entry)
        else:
            report.add(MISSING, path)
    return entries


def _warn_shared(train: list[dict], validation: list[dict], config: CocoFolderConfig) -> None:
    """Warns, naming them, about image files listed by both splits' JSONs."""
    def files(entries, images):
        return {os.path.realpath(os.path.join(images, entry["file_name"])) for entry in entries}

    shared = sorted(
        files(train, config.images) & files(validation, config.validation_images)
    )
    if shared:
        warnings.warn(
            f"{len(shared)} images are listed in both {config.annotations} and "
            f"{config.validation_annotations} (trained on and evaluated): "
            f"{first_few(shared, 5, separator='; ')}",
            stacklevel=3,
        )


def features() -> tfds.features.FeaturesDict:
    """The stored features: the records of `jaxseg.data.coco_records`."""
    return tfds.features.FeaturesDict(
        {
            "image_file": tfds.features.Tensor(shape=(), dtype=np.object_),
            "mask_rles": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "crowd": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            **folders.source_image_features(),
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
            builder=self,
            description=__doc__,
            features=features(),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        train = read_coco_json(config.annotations)
        check_ignore_label(config.ignore_label, train.class_names, config.annotations)
        self.info.metadata["class_names"] = list(train.class_names)
        report = folders.SkipReport(config.annotations)
        by_image = annotations_by_image(train, report)
        entries = _present(train, config.images, report)
        report.warn()
        fit = geometry.fit_of(config)
        if config.validation_annotations is None:
            splits = folders.split_items(
                entries, [entry["file_name"] for entry in entries], config.validation_fraction
            )
            jobs = {
                split: [(entry, by_image[entry["id"]], config.images, fit, train.labels)
                        for entry in items]
                for split, items in splits.items()
            }
            return {split: self._generate_examples(items) for split, items in jobs.items()}
        validation = read_coco_json(config.validation_annotations)
        note = (
            f"; they still count in the validation AP against {config.validation_annotations} "
            "(their objects are missed)"
        )
        notes = {reason: note for reason in (MISSING, coco_records.UNREADABLE,
                                             coco_records.OTHER_SIZE)}
        validation_report = folders.SkipReport(config.validation_annotations, notes)
        validation_by_image = annotations_by_image(validation, validation_report)
        validation_entries = _present(validation, config.validation_images, validation_report)
        validation_report.warn()
        _warn_shared(entries, validation_entries, config)
        return {
            "train": self._generate_examples(
                [(entry, by_image[entry["id"]], config.images, fit, train.labels)
                 for entry in entries]
            ),
            "validation": self._generate_examples(
                [(entry, validation_by_image[entry["id"]], config.validation_images, fit,
                  validation.labels) for entry in validation_entries],
                validation_report,
            ),
        }

    def _generate_examples(self, jobs: list, report: folders.SkipReport | None = None):
        report = report or folders.SkipReport(self.builder_config.annotations)
        for record, skips in coco_records.read_sources(jobs, self.builder_config.num_workers):
            for reason, item in skips:
                report.add(reason, item)
            if record is not None:
                yield record["image_id"], record
        report.warn()
