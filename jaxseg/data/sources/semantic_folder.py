"""`config.data.name = "semantic_folder"`: a local folder of images and one of PNG label
maps (`jaxseg.data.semantic_folder`); splits train, validation. Every image is stored resized
(aspect ratio kept) and padded to image_size x image_size, the label map holding the ignore
label in the padding.

Fields besides the common ones (`jaxseg.data.pipeline`):
  images, labels      the images folder and the label maps folder.
  num_classes, class_names   K and the K class names, class_names[0] the background.
  image_suffix, label_suffix   optional, default "": file-name endings removed before
                      matching (see `jaxseg.data.semantic_folder`).
  validation_fraction optional, default 0.1: the share of the images in the validation split.
  validation_images, validation_labels
                      optional, default None: the validation split's own folders (both or
                      neither; Cityscapes' leftImg8bit/val and gtFine/val); the train split is
                      then every pair of images and labels, validation_fraction not used.
  ignore_label        optional, default 255: the semantic label of padding pixels."""

from typing import Any

from jaxseg import registry
from jaxseg.data import folders, geometry, semantic_folder, storage
from jaxseg.data.sources import checks


def semantic_folder_config_from_data_config(data_config: Any) -> semantic_folder.SemanticFolderConfig:
    """The validated `SemanticFolderConfig` that `data_config` describes (ValueError if invalid).

    Error messages start with the name of the offending `data_config` field.
    """
    return semantic_folder.semantic_folder_config(
        images=data_config.images,
        labels=data_config.labels,
        image_size=data_config.image_size,
        num_classes=data_config.num_classes,
        validation_fraction=data_config.get(
            "validation_fraction", folders.DEFAULT_VALIDATION_FRACTION
        ),
        ignore_label=data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL),
        image_suffix=data_config.get("image_suffix", ""),
        label_suffix=data_config.get("label_suffix", ""),
        validation_images=data_config.get("validation_images"),
        validation_labels=data_config.get("validation_labels"),
        **geometry.resize_fields(data_config),
    )


def check(config: Any) -> None:
    """The class names, the ignore label and the folders of `config.data`."""
    checks.class_names_match_count(config)
    checks.ignore_label_matches_the_loss(config)
    checks.as_config_error("config.data.", semantic_folder_config_from_data_config, config.data)


@registry.DATASETS.register("semantic_folder", splits=folders.SPLITS, check=check)
def open_builder(data_config: Any, build: bool):
    """The prepared semantic-folder builder of `data_config` (built into data_dir if missing)."""
    config = semantic_folder_config_from_data_config(data_config)
    return storage.prepare(semantic_folder.SemanticFolder, config, data_config.data_dir, build=build)
