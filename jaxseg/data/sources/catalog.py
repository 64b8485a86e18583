"""`config.data.name = "tfds"`: a TFDS catalog dataset (Oxford-IIIT Pet, COCO), converted
on access (`jaxseg.data.catalog`) to images resized (aspect ratio kept) and padded to
image_size x image_size; splits train, validation.

Fields besides the common ones (`jaxseg.data.pipeline`):
  tfds_name           a key of `jaxseg.data.catalog.CATALOG`, e.g. "oxford_iiit_pet".
  num_classes, class_names   must be the catalog's (`catalog.class_names`).
  train_split, validation_split   optional TFDS split expressions read as our train and
                      validation splits; default the dataset's (pets: train, test).
  ignore_label        optional, default 255: the semantic label of padding pixels.
  download            optional, default False: download and prepare missing data (process
                      0 only); otherwise missing data is an error saying how to prepare it.
  stuff_class_names   Panoptic FPN only, coco/2017_panoptic only: ("thing", the 53 stuff
                      names by increasing COCO id), `coco_categories.COCO_STUFF_CLASS_NAMES`.

COCO instances are scored in the source images' own pixels against the objects TFDS
gives, crowd regions included, with COCO's category ids (`catalog_truth`); coco/2017_panoptic's
panoptic maps likewise, against its segments as TFDS gives them (`panoptic_frame`)."""

from typing import Any

from jaxseg import registry
from jaxseg.data import (
    catalog, catalog_panoptic, catalog_truth, coco_categories, folders, geometry,
)
from jaxseg.data.sources import checks
from jaxseg.errors import ConfigError
from jaxseg.evaluation import frames
from jaxseg.evaluation.panoptic_frames import PanopticFrame


def catalog_config_from_data_config(data_config: Any) -> catalog.CatalogConfig:
    """The validated `CatalogConfig` that `data_config` describes (ValueError if invalid).

    Error messages start with the name of the offending `data_config` field.
    """
    return catalog.catalog_config(
        tfds_name=data_config.get("tfds_name"),
        image_size=data_config.image_size,
        train_split=data_config.get("train_split"),
        validation_split=data_config.get("validation_split"),
        ignore_label=data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL),
        download=data_config.get("download", False),
        **geometry.resize_fields(data_config),
    )


def _check_stuff_class_names(data_config: Any, tfds_name: str) -> None:
    """ConfigError unless `stuff_class_names`, where given, are the dataset's."""
    given = data_config.get("stuff_class_names")
    if given is None:
        return
    expected = catalog.CATALOG[tfds_name].stuff_class_names
    if not expected:
        raise ConfigError(
            f"config.data.stuff_class_names={tuple(given)}: {tfds_name} has no stuff classes "
            "(only coco/2017_panoptic's records carry Panoptic FPN's semantic target)."
        )
    if tuple(given) != expected:
        raise ConfigError(
            f"config.data.stuff_class_names={tuple(given)} must be the {len(expected)} classes "
            f"of {tfds_name}'s semantic map: \"thing\", then its stuff categories by increasing "
            "id (jaxseg.data.coco_categories.COCO_STUFF_CLASS_NAMES)."
        )


def check(config: Any) -> None:
    """The catalog name and splits, its class names and stuff class names, the ignore label."""
    checks.ignore_label_matches_the_loss(config)
    dataset = checks.as_config_error("config.data.", catalog_config_from_data_config, config.data)
    names = catalog.class_names(dataset.tfds_name)
    checks.as_config_error(
        "config.data.", checks.check_class_names, config.data, names, dataset.tfds_name
    )
    _check_stuff_class_names(config.data, dataset.tfds_name)


def instance_frame(data_config: Any, source) -> frames.InstanceFrame:
    """The frame a COCO split (`source`) is scored in: the source images, their objects as
    TFDS gives them (`catalog_truth`) and COCO's category ids."""
    config = catalog_config_from_data_config(data_config)
    objects_of = catalog_truth.OBJECTS.get(config.tfds_name)
    if objects_of is None:
        raise ValueError(f"{config.tfds_name} has no instances to evaluate")
    names = coco_categories.COCO_CLASS_NAMES[1:]
    ids = coco_categories.COCO_CATEGORY_IDS
    return frames.objects_frame(
        source,
        lambda index: objects_of(source.records.raw(index)),
        (0, *ids),
        [{"id": i, "name": n} for i, n in zip(ids, names)],
    )


def panoptic_frame(data_config: Any, source) -> PanopticFrame:
    """The frame a coco/2017_panoptic split (`source`) is scored in: the source images, their
    segments as TFDS gives them (`catalog_truth.coco_panoptic_ground_truth`), COCO's image
    and category ids (ValueError for the other catalog datasets)."""
    config = catalog_config_from_data_config(data_config)
    if not catalog.CATALOG[config.tfds_name].stuff_class_names:
        raise ValueError(f"{config.tfds_name} has no panoptic segments to evaluate; coco/2017_panoptic has")
    image_ids, placements = frames.ids_and_placements(source)
    return PanopticFrame(
        categories=catalog_panoptic.categories(),
        thing_ids=(0, *coco_categories.COCO_CATEGORY_IDS),
        stuff_ids=(0, *coco_categories.COCO_STUFF_CATEGORY_IDS),
        ground_truth=lambda index: catalog_truth.coco_panoptic_ground_truth(source.records.raw(index)),
        placements=placements,
        image_ids=image_ids,
    )


@registry.DATASETS.register(
    "tfds", splits=folders.SPLITS, check=check, instance_frame=instance_frame,
    panoptic_frame=panoptic_frame,
)
def open_builder(data_config: Any, build: bool):
    """The prepared catalog dataset of `data_config` (downloaded only if it says so)."""
    config = catalog_config_from_data_config(data_config)
    checks.check_class_names(data_config, catalog.class_names(config.tfds_name), config.tfds_name)
    return catalog.prepare_catalog(config, data_config.data_dir, build=build)
