"""`config.data.name = "coco_folder"`: a local COCO-format instances JSON and its images
folder (`jaxseg.data.coco_folder`); splits train, validation. The records keep the image
files as they are; every example is resized (aspect ratio kept) and padded to image_size x
image_size when read, the semantic map holding the ignore label in the padding.

Fields besides the common ones (`jaxseg.data.pipeline`):
  annotations, images the instances JSON and the folder its `file_name`s are relative to.
  root                optional, default None: the folder relative paths of annotations,
                      images, validation_annotations and validation_images are under
                      (COCO's own layout: `configs/mask_rcnn_coco.py`).
  num_classes, class_names   K and the K class names, class_names[0] the background; the
                      others must be the JSON's categories by increasing id.
  validation_fraction optional, default 0.1: the share of the images in the validation split.
  validation_annotations, validation_images
                      optional, default None: the validation split's own instances JSON and
                      images folder (both or neither), as COCO (`instances_val2017.json`,
                      `val2017/`), Roboflow or CVAT lay out their splits; the train split is
                      then every image of `annotations`, validation_fraction is not used,
                      and the validation split is scored against every image of its JSON.
  ignore_label        optional, default 255: the semantic label of padding pixels.

Instances are scored in the source images' own pixels against the JSON itself
(`jaxseg.evaluation.frames.coco_json_frame`): with split files, against every image of the
split's JSON (an image that could not be read counts, its objects missed)."""

import os
from typing import Any

from jaxseg import registry
from jaxseg.data import coco_folder, coco_json, folders, geometry, storage
from jaxseg.data.sources import checks
from jaxseg.evaluation import frames


PATH_FIELDS = ("annotations", "images", "validation_annotations", "validation_images")


def _located(data_config: Any, field: str):
    """`data_config.<field>` under `data_config.root` if relative (ValueError naming root if
    it is not set and the relative path is missing where it stands)."""
    path, root = data_config.get(field), data_config.get("root")
    if not isinstance(path, str) or os.path.isabs(path):
        return path
    if root is not None:
        return os.path.join(root, path)
    if not os.path.exists(path):
        raise ValueError(
            f"root is not set and {field}={path!r} is not found here: set root to the folder "
            f"holding {path} (COCO's own layout) or give {field} a path that exists"
        )
    return path


def coco_folder_config_from_data_config(data_config: Any) -> coco_folder.CocoFolderConfig:
    """The validated `CocoFolderConfig` that `data_config` describes (ValueError if invalid).

    Error messages start with the name of the offending `data_config` field.
    """
    located = {field: _located(data_config, field) for field in PATH_FIELDS}
    return coco_folder.coco_folder_config(
        annotations=located["annotations"],
        images=located["images"],
        image_size=data_config.image_size,
        validation_fraction=data_config.get(
            "validation_fraction", folders.DEFAULT_VALIDATION_FRACTION
        ),
        ignore_label=data_config.get("ignore_label", folders.DEFAULT_IGNORE_LABEL),
        num_workers=checks.num_workers_from_data_config(data_config),
        validation_annotations=located["validation_annotations"],
        validation_images=located["validation_images"],
        **geometry.resize_fields(data_config),
    )


def check(config: Any) -> None:
    """The paths, the JSON's categories against the class names, the ignore label."""
    checks.ignore_label_matches_the_loss(config)
    folder = checks.as_config_error(
        "config.data.", coco_folder_config_from_data_config, config.data
    )
    path, ignore_label = folder.annotations, folder.ignore_label
    names = checks.as_config_error("config.data.annotations: ", coco_json.read_class_names, path)
    checks.as_config_error("config.data.", checks.check_class_names, config.data, names, path)
    checks.as_config_error(
        "config.data.", coco_json.check_ignore_label, ignore_label, names, path
    )


def instance_frame(data_config: Any, source) -> frames.InstanceFrame:
    """The frame a split (`source`) is scored in: its images and the instances JSON; with
    split files, every image of the split's own JSON."""
    if data_config.get("validation_annotations") is None:
        path = _located(data_config, "annotations")
        return frames.coco_json_frame(os.path.abspath(path), source)
    field = "validation_annotations" if source.split == "validation" else "annotations"
    path = _located(data_config, field)
    return frames.coco_json_frame(os.path.abspath(path), source, every_image=True)


@registry.DATASETS.register(
    "coco_folder", splits=folders.SPLITS, check=check, instance_frame=instance_frame
)
def open_builder(data_config: Any, build: bool):
    """The prepared COCO-folder builder of `data_config` (built into data_dir if missing)."""
    config = coco_folder_config_from_data_config(data_config)
    builder = storage.prepare(coco_folder.CocoFolder, config, data_config.data_dir, build=build)
    checks.check_class_names(data_config, builder.info.metadata["class_names"], config.annotations)
    return builder
