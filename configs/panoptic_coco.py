"""Panoptic FPN ResNet-50-FPN on COCO 2017 panoptic (TFDS `coco/2017_panoptic`), 1x schedule.

configs/mask_rcnn_coco_tfds.py (its data, its 1x schedule and what it leaves out: no pretrained
weights, detectron2's shortest-edge sizes on a static 1344x1344 canvas, colour jitter; read
its docstring) with detectron2's semantic FPN head (panoptic_fpn_R_50_1x: 128 channels,
GroupNorm, semantic loss weight 0.5) on its pyramid. The 80 thing classes are the instances;
the semantic head predicts class 0 for every thing pixel and the 53 stuff classes 1..53
(`stuff_class_names`, by increasing COCO id; jaxseg/data/catalog_panoptic.py).

Scoring (PQ, as panopticapi computes it) runs in the source images' own pixels, against
the segments TFDS gives, with COCO's image and category ids (the `tfds` kind's panoptic
frame). Fusion runs there too: the masks are pasted and the semantic map resized back to
the source image's size before fusing, as detectron2 fuses at the original resolution, so
detectron2's defaults apply unchanged, stuff_area_limit 4,096 pixels included.
Run: python -m jaxseg.main --config=configs/panoptic_coco.py --workdir=DIR
"""

import ml_collections

from configs import mask_rcnn_coco_tfds
from configs.base import panoptic
from jaxseg.data import coco_categories


def get_config() -> ml_collections.ConfigDict:
    """configs/mask_rcnn_coco_tfds.py with Panoptic FPN's semantic head and detectron2's fusion."""
    config = mask_rcnn_coco_tfds.get_config()
    config.data.stuff_class_names = coco_categories.COCO_STUFF_CLASS_NAMES
    panoptic.panoptic_fpn(config.model, semantic_channels=128, stuff_area_limit=4096)
    return config
