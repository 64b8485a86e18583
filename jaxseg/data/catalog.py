"""TFDS catalog datasets (`config.data.name = "tfds"`), converted to this project's examples.

Datasets (`tfds_name`) and how each example is converted on access:
  oxford_iiit_pet     semantic. TFDS's `segmentation_mask` is the trimap: 1 = pet, 2 =
                      background, 3 = border (the uncertain band around the pet's outline).
                      Classes: 0 background (trimap 2), 1 pet (trimap 1), 2 border (trimap 3).
                      No instances. Splits with annotations: train (3,680), test (3,669).
  coco/2017_panoptic  instances with real masks: the panoptic segments of the 80 thing
                      classes (TFDS labels 0..79 of its 133), their pixels decoded from
                      `panoptic_image` (segment id = R + 256 G + 65536 B), boxes the tight
                      boxes of the resized masks. Panoptic masks do not overlap (COCO
                      resolved the instance annotations' overlaps), so they differ slightly
                      from the instances JSON's masks. The semantic map is Panoptic FPN's
                      target (`catalog_panoptic`); Mask R-CNN does not read it.
  coco/2017, coco/2014 instances WITHOUT masks: TFDS keeps only boxes of these configs, so each
                      instance's mask is its box (the pixels whose centres lie in it). Box AP
                      is meaningful; mask AP then only scores boxes.
For COCO, label = TFDS label + 1 (1..80, 0 is the background); crowd objects (`is_crowd`) are
dropped, as COCO leaves them out of training targets; objects that cover no pixel centre at
the stored size are dropped. TFDS's bbox is normalized (ymin, xmin, ymax, xmax).

Geometry (`jaxseg.data.geometry`): images are resized with the aspect ratio kept as the
config's `Fit` says (default: the longer side `image_size`), then padded at the bottom and
right; label maps and masks are resized by nearest neighbour. The semantic map holds the
ignore label in the padding (coco/2017, coco/2014: 0 in the image, each kept instance
painted with its label).

Preparing and reading: datasets are read by random access from TFDS's `array_record` format
(`builder.as_data_source`), which needs no TensorFlow. Preparing them does: TFDS's COCO and
Pet builders use TensorFlow while generating. A missing dataset is downloaded and prepared
only with `download=True` (process 0 only); otherwise the error says how to prepare it:
    tfds build oxford_iiit_pet --data_dir=DIR --file_format=array_record
Without TensorFlow, datasets whose builder code imports it (COCO) are opened from their
prepared files.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import tensorflow_datasets as tfds
from tensorflow_datasets.core import read_only_builder

from jaxseg.data import folders, geometry
from jaxseg.data.catalog_examples import (
    PET_CLASS_NAMES,
    convert_coco_boxes,
    convert_coco_panoptic,
    convert_pet,
)
from jaxseg.data.coco_categories import COCO_CLASS_NAMES, COCO_STUFF_CLASS_NAMES

# --------------------------------------------------------------------------- the catalog


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """What the pipeline needs to know of one TFDS dataset.

    class_names: the K classes of the converted examples, the background first.
    convert: (TFDS example, `geometry.Fit`, ignore_label) -> record.
    splits: the TFDS splits with annotations; the first two are the default train and
      validation splits.
    objects: the sequence feature whose first ClassLabel names must be class_names[1:]
      + stuff_class_names[1:], or None.
    stuff_class_names: the classes of a Panoptic FPN semantic map ("thing" first), or ().
    """

    class_names: tuple[str, ...]
    convert: Callable[[dict, geometry.Fit, int], dict]
    splits: tuple[str, ...]
    objects: str | None
    stuff_class_names: tuple[str, ...] = ()


CATALOG = {
    "oxford_iiit_pet": CatalogEntry(PET_CLASS_NAMES, convert_pet, ("train", "test"), None),
    "coco/2017_panoptic": CatalogEntry(
        COCO_CLASS_NAMES, convert_coco_panoptic, ("train", "validation"), "panoptic_objects",
        COCO_STUFF_CLASS_NAMES,
    ),
    "coco/2017": CatalogEntry(
        COCO_CLASS_NAMES, convert_coco_boxes, ("train", "validation"), "objects"
    ),
    "coco/2014": CatalogEntry(
        COCO_CLASS_NAMES, convert_coco_boxes, ("train", "validation"), "objects"
    ),
}


def class_names(tfds_name: str) -> tuple[str, ...]:
    """The K class names (background first) of the converted examples of `tfds_name`."""
    return CATALOG[tfds_name].class_names


@dataclasses.dataclass(frozen=True)
class CatalogConfig:
    """One catalog dataset at one size and fit; build it with `catalog_config`."""

    tfds_name: str
    train_split: str
    validation_split: str
    image_size: int
    ignore_label: int
    download: bool
    resize_shorter_side: int | None = None
    resize_max_longer_side: int | None = None


def _check_split(field: str, split, tfds_name: str) -> None:
    """ValueError unless `split` is a TFDS split expression over annotated splits."""
    known = CATALOG[tfds_name].splits
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"{field}={split!r} must be a TFDS split name such as {known[0]!r}")
    names = [part.split("[")[0].strip() for part in split.split("+")]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"{field}={split!r}: {unknown[0]!r} is not an annotated split of {tfds_name}; "
            f"expected one of {known} (slices such as '{known[0]}[:90%]' are fine)"
        )


def catalog_config(
    *,
    tfds_name,
    image_size,
    train_split=None,
    validation_split=None,
    ignore_label=folders.DEFAULT_IGNORE_LABEL,
    download=False,
    resize_shorter_side=None,
    resize_max_longer_side=None,
) -> CatalogConfig:
    """A validated `CatalogConfig`; splits left None take the dataset's defaults.

    Raises:
      ValueError: an invalid parameter, named at the start of the message.
    """
    if tfds_name is None or tfds_name == "":
        raise ValueError(f"tfds_name is not set: give one of {tuple(CATALOG)}")
    if not isinstance(tfds_name, str) or tfds_name not in CATALOG:
        raise ValueError(f"tfds_name={tfds_name!r} is not one of {tuple(CATALOG)}")
    entry = CATALOG[tfds_name]
    train_split = entry.splits[0] if train_split is None else train_split
    validation_split = entry.splits[1] if validation_split is None else validation_split
    _check_split("train_split", train_split, tfds_name)
    _check_split("validation_split", validation_split, tfds_name)
    folders.check_common_params(
        image_size, folders.DEFAULT_VALIDATION_FRACTION, ignore_label, len(entry.class_names)
    )
    fit = geometry.checked_fit(image_size, resize_shorter_side, resize_max_longer_side)
    if not isinstance(download, bool):
        raise ValueError(f"download={download!r} must be True or False")
    return CatalogConfig(
        tfds_name, train_split, validation_split, image_size, ignore_label, download,
        fit.shorter_side, fit.max_longer_side,
    )


class ConvertedSource:
    """Random access to the records of a TFDS data source, each converted when read."""

    def __init__(self, source, convert: Callable[[dict], dict]):
        self._source = source
        self._convert = convert

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return self._convert(self._source[index])

    def raw(self, index: int) -> dict:
        """The TFDS example `index` as TFDS gives it (evaluation reads its own annotations)."""
        return self._source[index]


class CatalogDataset:
    """A prepared catalog dataset; `as_data_source(split)` opens "train" or "validation"."""

    def __init__(self, config: CatalogConfig, builder):
        self.config = config
        self.builder = builder

    def as_data_source(self, split: str) -> ConvertedSource:
        """The converted records of `split` (records as `_record` describes)."""
        tfds_split = {"train": self.config.train_split, "validation": self.config.validation_split}
        convert = functools.partial(
            CATALOG[self.config.tfds_name].convert,
            fit=geometry.fit_of(self.config),
            ignore_label=self.config.ignore_label,
        )
        return ConvertedSource(self.builder.as_data_source(split=tfds_split[split]), convert)


def _build_command(tfds_name: str, data_dir) -> str:
    location = f" --data_dir={data_dir}" if data_dir else ""
    return f"`tfds build {tfds_name}{location} --file_format=array_record`"


def _open_builder(tfds_name: str, data_dir):
    """The TFDS builder of `tfds_name`: from its code, or from its prepared files where the
    code needs TensorFlow and TensorFlow is missing."""
    try:
        return tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record")
    except ModuleNotFoundError as error:
        try:
            return read_only_builder.builder_from_files(
                tfds_name, data_dir=data_dir, file_format="array_record"
            )
        except tfds.core.DatasetNotFoundError:
            raise ValueError(
                f"tfds_name={tfds_name!r} is not prepared under {data_dir or 'the TFDS default'}"
                f" and its TFDS builder needs TensorFlow ({error}). Prepare it on a machine "
                f"with TensorFlow (pip install tensorflow-cpu): {_build_command(tfds_name, data_dir)}"
                "; reading it needs no TensorFlow."
            ) from error


def _download(builder, config: CatalogConfig, data_dir, build: bool) -> None:
    name, command = config.tfds_name, _build_command(config.tfds_name, data_dir)
    if not config.download:
        raise ValueError(
            f"tfds_name={name!r} is not prepared in {builder.data_dir}: set "
            f"--config.data.download=True to download and prepare it, or run {command} "
            "(both need TensorFlow: pip install tensorflow-cpu)."
        )
    if not build:
        raise ValueError(
            f"tfds_name={name!r} is not prepared in {builder.data_dir}, and only process 0 "
            f"downloads: prepare it before a multi-process run, e.g. {command}."
        )
    try:
        builder.download_and_prepare(file_format="array_record")
    except ModuleNotFoundError as error:
        raise ValueError(
            f"preparing tfds_name={name!r} needs TensorFlow, which its TFDS builder uses "
            f"({error}): pip install tensorflow-cpu, then run again."
        ) from error


def _check_label_names(builder, config: CatalogConfig) -> None:
    """ValueError if the prepared data names its labels other than the catalog does."""
    entry = CATALOG[config.tfds_name]
    if entry.objects is None:
        return
    names = list(builder.info.features[entry.objects]["label"].names)
    if names == [str(i) for i in range(len(names))]:
        return  # Names are set while preparing; a builder from code alone has none.
    expected = [*entry.class_names[1:], *entry.stuff_class_names[1:]]
    if names[: len(expected)] != expected:
        raise ValueError(
            f"tfds_name={config.tfds_name!r}: the prepared data's labels {names[:5]}... are not "
            f"the {len(expected)} classes {expected[:5]}... in this order"
        )


def prepare_catalog(config: CatalogConfig, data_dir=None, *, build: bool = True):
    """The `CatalogDataset` of `config`, downloading and preparing it only if allowed.

    Args:
      config: from `catalog_config`.
      data_dir: TFDS data directory; None = TFDS default.
      build: whether this process may download (pass `process_index == 0`).

    Raises:
      ValueError: data missing (saying how to prepare it), prepared in another file format,
        or labelled differently from the catalog.
    """
    builder = _open_builder(config.tfds_name, data_dir)
    if not builder.is_prepared():
        _download(builder, config, data_dir, build)
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise ValueError(
            f"tfds_name={config.tfds_name!r} is prepared in {builder.data_dir} in the "
            f"{builder.info.file_format} format; random access needs array_record: convert "
            f"it with `tfds convert_format --out_file_format=array_record` or run "
            f"{_build_command(config.tfds_name, data_dir)}."
        )
    _check_label_names(builder, config)
    return CatalogDataset(config, builder)
