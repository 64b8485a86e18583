"""U-Net on a local folder of images and a folder of PNG label maps (VOC/Cityscapes layout).

Each image has a single-channel PNG of class ids 0..K-1 (or the ignore label 255) with the
same relative path and name; optional suffixes are removed before matching, e.g. for
Cityscapes --config.data.image_suffix=_leftImg8bit
--config.data.label_suffix=_gtFine_labelTrainIds (see jaxseg/data/semantic_folder.py).
Images are resized (aspect ratio kept) and padded to 256x256 once, into
config.data.data_dir, the padding labelled with the ignore label; 10% of the images,
chosen by file-name hash, form the validation split, or the validation split has its own
folders: --config.data.validation_images=leftImg8bit/val
--config.data.validation_labels=gtFine/val.
Run: python -m jaxseg.main --config=configs/unet_folder.py --workdir=DIR \\
    --config.data.images=IMAGES_DIR --config.data.labels=LABELS_DIR
The classes default to background and foreground; set --config.data.num_classes=K and
"--config.data.class_names=('background', ...)" for other label maps.
"""

import ml_collections

from configs import unet_shapes
from configs.base import data


def get_config() -> ml_collections.ConfigDict:
    """The shapes U-Net experiment on an images folder and a label maps folder at 256x256."""
    config = unet_shapes.get_config()

    config.data = data.real_images("semantic_folder", image_size=256, max_instances=1)
    config.data.images = ml_collections.FieldReference(None, field_type=str)
    config.data.labels = ml_collections.FieldReference(None, field_type=str)
    config.data.image_suffix = ""
    config.data.label_suffix = ""
    config.data.num_classes = 2
    config.data.class_names = ("background", "foreground")
    config.data.validation_fraction = 0.1
    # The validation split's own folders (Cityscapes' leftImg8bit/val and gtFine/val).
    config.data.validation_images = ml_collections.FieldReference(None, field_type=str)
    config.data.validation_labels = ml_collections.FieldReference(None, field_type=str)

    config.loss.ignore_label = config.data.get_ref("ignore_label")
    return config
