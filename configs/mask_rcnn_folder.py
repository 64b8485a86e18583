"""Mask R-CNN (ResNet-18-FPN, GroupNorm) on a local COCO-format dataset.

The dataset is an instances JSON and the folder of its images, as COCO, CVAT, Label Studio
and others export them (see jaxseg/data/coco_folder.py). The image files and their masks are
copied once into config.data.data_dir as they are; each image is resized (aspect ratio kept)
and padded to 512x512 when read. 10% of them, chosen by file-name hash, form the validation
split.
Run: python -m jaxseg.main --config=configs/mask_rcnn_folder.py --workdir=DIR \\
    --config.data.annotations=instances.json --config.data.images=IMAGES_DIR \\
    --config.data.num_classes=3 "--config.data.class_names=('background', 'cat', 'dog')"
num_classes and class_names must be the background and the JSON's categories in increasing
id order; a run with others stops before training, naming the values to give. A layout with
a JSON per split (COCO's train2017/val2017, Roboflow's train/valid) adds
    --config.data.validation_annotations=instances_val.json \\
    --config.data.validation_images=VAL_IMAGES_DIR
and is scored against every image of the validation JSON.
"""

import ml_collections

from configs import mask_rcnn_shapes
from configs.base import data


def get_config() -> ml_collections.ConfigDict:
    """The shapes Mask R-CNN experiment on a COCO-format folder at 512x512."""
    config = mask_rcnn_shapes.get_config()

    config.data = data.real_images("coco_folder", image_size=512, max_instances=32)
    config.data.annotations = ml_collections.FieldReference(None, field_type=str)
    config.data.images = ml_collections.FieldReference(None, field_type=str)
    config.data.num_classes = ml_collections.FieldReference(None, field_type=int)
    config.data.class_names = ml_collections.FieldReference(None, field_type=tuple)
    config.data.validation_fraction = 0.1
    # The validation split's own JSON and images (COCO's val2017, Roboflow's valid/).
    config.data.validation_annotations = ml_collections.FieldReference(None, field_type=str)
    config.data.validation_images = ml_collections.FieldReference(None, field_type=str)

    config.model.anchor_sizes = (32.0, 64.0, 128.0, 256.0, 512.0)
    return config
