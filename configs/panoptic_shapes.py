"""Panoptic FPN (ResNet-18-FPN, GroupNorm) on the panoptic shapes: things over stuff regions.

The Mask R-CNN of configs/mask_rcnn_shapes.py with detectron2's semantic FPN head on its
pyramid; sized for PQ >= 0.70 on the validation split within 4,000 steps of batch 4 on
2 CPU cores, from scratch.
Run: python -m jaxseg.main --config=configs/panoptic_shapes.py --workdir=DIR
"""

import ml_collections

from configs import mask_rcnn_shapes
from configs.base import data, panoptic


def get_config() -> ml_collections.ConfigDict:
    """The shapes Mask R-CNN experiment with a semantic head, on the panoptic shapes."""
    config = mask_rcnn_shapes.get_config()
    config.data = data.panoptic_shapes(max_instances=8)
    # detectron2's fusion drops stuff segments under 4,096 px: at COCO's ~800 x 1333 images
    # about 0.4% of the image, 64 px at 128 x 128.
    panoptic.panoptic_fpn(config.model, semantic_channels=64, stuff_area_limit=64)
    return config
