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
                      0 only); otherwise missing data is an error saying how to prepare it."""

from typing import Any

from jaxseg import registry
from jaxseg.data import catalog, folders
from jaxseg.data.sources import checks


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
    )


def check(config: Any) -> None:
    """The catalog name and splits, its class names, the ignore label."""
    checks.ignore_label_matches_the_loss(config)
    dataset = checks.as_config_error("config.data.", catalog_config_from_data_config, config.data)
    names = catalog.class_names(dataset.tfds_name)
    checks.as_config_error(
        "config.data.", checks.check_class_names, config.data, names, dataset.tfds_name
    )


@registry.DATASETS.register("tfds", splits=folders.SPLITS, check=check)
def open_builder(data_config: Any, build: bool):
    """The prepared catalog dataset of `data_config` (downloaded only if it says so)."""
    config = catalog_config_from_data_config(data_config)
    checks.check_class_names(data_config, catalog.class_names(config.tfds_name), config.tfds_name)
    return catalog.prepare_catalog(config, data_config.data_dir, build=build)
