"""configs/mask_rcnn_coco.py on TFDS's `coco/2017_panoptic` catalog instead of COCO's files.

TFDS's `coco/2017` keeps boxes but NO MASKS. This config therefore reads
`coco/2017_panoptic`: the same 118,287 train and 5,000 validation images, whose panoptic PNGs
give real masks of the 80 thing classes (stuff segments and crowd regions dropped; see
jaxseg/data/catalog.py). Panoptic masks are COCO's instance masks with their overlaps
resolved, so AP on this validation split is close to, not the same as, AP against the
official instances JSON (configs/mask_rcnn_coco.py scores against it).
--config.data.tfds_name=coco/2017 trains on boxes with BOX-SHAPED MASKS instead: its box AP
is meaningful, its mask AP is not. Training resizes the stored 800-side content to each
drawn shorter side (jaxseg/data/augment.py), not the source image.

The first run downloads (about 20 GB) and prepares the dataset in TFDS's array_record format
under config.data.data_dir (TFDS's default when unset); preparing needs TensorFlow
(pip install tensorflow-cpu), reading does not. With --config.data.download=False a missing
dataset stops the run, saying how to prepare it. Everything else is configs/mask_rcnn_coco.py.
Run: python -m jaxseg.main --config=configs/mask_rcnn_coco_tfds.py --workdir=DIR
"""

import ml_collections

from configs import mask_rcnn_coco
from configs.base import data

# The data fields kept from configs/mask_rcnn_coco.py: the geometry and the classes.
SHARED_FIELDS = (
    "resize_shorter_side",
    "resize_max_longer_side",
    "train_shorter_sides",
    "scale_jitter",
    "num_classes",
    "class_names",
)


def get_config() -> ml_collections.ConfigDict:
    """configs/mask_rcnn_coco.py with its data from TFDS's coco/2017_panoptic."""
    config = mask_rcnn_coco.get_config()
    files = config.data
    config.data = data.real_images(
        "tfds", image_size=files.image_size, max_instances=files.max_instances
    )
    for field in SHARED_FIELDS:
        config.data[field] = files[field]
    config.data.tfds_name = "coco/2017_panoptic"
    config.data.train_split = "train"
    config.data.validation_split = "validation"
    config.data.download = True
    return config
