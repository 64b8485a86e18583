"""`config.data.name = "coco_panoptic_folder"`: a local COCO panoptic JSON, its images folder
and its PNG folder (`jaxseg.data.coco_panoptic_folder`); splits train, validation.

Fields besides the common ones (`jaxseg.data.pipeline`):
  annotations, images, panoptic_masks   the panoptic JSON, the folder its images'
                      `file_name`s are relative to, and the folder of its PNGs.
  num_classes, class_names   K and ("background", the thing categories' names by id).
  stuff_class_names   ("thing", the stuff categories' names by id).
  validation_fraction optional, default 0.1; ignore_label optional, default 255.

Panoptic maps are scored in the source images' own pixels against the JSON and PNGs
themselves (`panoptic_frame`): its image and category ids, its crowd regions and areas.
"""

import os
from typing import Any

from jaxseg import registry
from jaxseg.data import coco_panoptic_folder, folders, geometry, panoptic_format, storage
from jaxseg.data.sources import checks
from jaxseg.errors import ConfigError
from jaxseg.evaluation import frames
from jaxseg.evaluation.panoptic_frames import PanopticFrame


def folder_config_from_data_config(data_config: Any) -> coco_panoptic_folder.CocoPanopticFolderConfig:
    """The validated config that `data_config` describes (ValueError naming the field)."""
    return coco_panoptic_folder.coco_panoptic_folder_config(
        annotations=data_config.annotations,
        images=data_config.images,
        panoptic_masks=data_config.panoptic_masks,
        image_size=data_config.image_size,
        validation_fraction=data_config.get("validation_fraction", folders.DEFAULT_VALIDATION_FRACTION),
        ignore_label=data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL),
        **geometry.resize_fields(data_config),
    )


def _check_names(data_config: Any, coco: coco_panoptic_folder.PanopticJson, path: str) -> None:
    checks.check_class_names(data_config, coco.class_names, path)
    given = tuple(data_config.get("stuff_class_names") or ())
    if given != coco.stuff_class_names:
        raise ValueError(f"stuff_class_names={given} must be {coco.stuff_class_names}: \"thing\", then "
                         f"the stuff categories of {path} by increasing id")
    if data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL) < max(len(coco.class_names),
                                                                          len(coco.stuff_class_names)):
        raise ValueError(f"ignore_label must be above the semantic labels 0..{len(coco.stuff_class_names) - 1}")


def check(config: Any) -> None:
    """The paths, the JSON's categories against the class names, the ignore label."""
    folder = checks.as_config_error("config.data.", folder_config_from_data_config, config.data)
    coco = checks.as_config_error("config.data.annotations: ", coco_panoptic_folder.read_panoptic_json,
                                  folder.annotations)
    try:
        _check_names(config.data, coco, folder.annotations)
    except ValueError as error:
        raise ConfigError(f"config.data.{error}") from None


def panoptic_frame(data_config: Any, source) -> PanopticFrame:
    """The frame a split (`source`) is scored in: its source images, the JSON and its PNGs."""
    coco = coco_panoptic_folder.read_panoptic_json(os.path.abspath(data_config.annotations))
    image_ids, placements = frames.ids_and_placements(source)

    def ground_truth(index: int):
        annotation = coco.annotations[image_ids[index]]
        ids = panoptic_format.read_id_png(os.path.join(data_config.panoptic_masks, annotation["file_name"]))
        return ids, annotation["segments_info"]

    return PanopticFrame(
        categories=coco.categories,
        thing_ids=(0, *coco.labels),
        stuff_ids=(0, *coco.stuff_labels),
        ground_truth=ground_truth,
        placements=placements,
        image_ids=image_ids,
    )


@registry.DATASETS.register("coco_panoptic_folder", splits=folders.SPLITS, check=check, panoptic_frame=panoptic_frame)
def open_builder(data_config: Any, build: bool):
    """The prepared builder of `data_config` (built into data_dir if missing)."""
    config = folder_config_from_data_config(data_config)
    builder = storage.prepare(coco_panoptic_folder.CocoPanopticFolder, config, data_config.data_dir, build=build)
    _check_names(data_config, coco_panoptic_folder.read_panoptic_json(config.annotations), config.annotations)
    return builder
