"""Mask R-CNN (ResNet-18-FPN, GroupNorm) on a local COCO-format dataset.

The dataset is an instances JSON and the folder of its images, as COCO, CVAT, Label Studio
and others export them (see jaxseg/data/coco_folder.py). Images are resized (aspect ratio
kept) and padded to 512x512 once, into config.data.data_dir; 10% of them, chosen by
file-name hash, form the validation split.
Run: python -m jaxseg.main --config=configs/mask_rcnn_folder.py --workdir=DIR \\
    --config.data.annotations=instances.json --config.data.images=IMAGES_DIR \\
    --config.data.num_classes=3 "--config.data.class_names=('background', 'cat', 'dog')"
num_classes and class_names must be the background and the JSON's categories in increasing
id order; a run with others stops before training, naming the values to give.
"""

import ml_collections

from configs import mask_rcnn_shapes


def get_config() -> ml_collections.ConfigDict:
    """The shapes Mask R-CNN experiment on a COCO-format folder at 512x512."""
    config = mask_rcnn_shapes.get_config()

    config.data = ml_collections.ConfigDict()
    config.data.name = "coco_folder"
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    # Required: the instances JSON and the folder its image file names are relative to.
    config.data.annotations = ml_collections.FieldReference(None, field_type=str)
    config.data.images = ml_collections.FieldReference(None, field_type=str)
    # Required: K = categories + 1, and ("background", category names by increasing id).
    config.data.num_classes = ml_collections.FieldReference(None, field_type=int)
    config.data.class_names = ml_collections.FieldReference(None, field_type=tuple)
    config.data.image_size = 512
    config.data.validation_fraction = 0.1
    # The semantic label of padding pixels (the semantic map is not used by Mask R-CNN).
    config.data.ignore_label = 255
    config.data.max_instances = 32
    config.data.flip = True
    # Training-only augmentations (jaxseg/data/augment.py).
    config.data.scale_jitter = (0.8, 1.25)
    config.data.color_jitter = 0.2
    # Real datasets can be large: decode the stored PNGs at every read instead of caching.
    config.data.cache_decoded = False

    # Anchors for objects of 32 to 512 pixels, as detectron2 uses at this image size.
    config.model.anchor_sizes = (32.0, 64.0, 128.0, 256.0, 512.0)
    return config
