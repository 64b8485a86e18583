"""Panoptic FPN (ResNet-18-FPN, GroupNorm) on the panoptic shapes: things over stuff regions.

The Mask R-CNN of configs/mask_rcnn_shapes.py with detectron2's semantic FPN head on its
pyramid; sized for PQ >= 0.70 on the validation split within 4,000 steps of batch 4 on
2 CPU cores, from scratch.
Run: python -m jaxseg.main --config=configs/panoptic_shapes.py --workdir=DIR
"""

import ml_collections

from configs import mask_rcnn_shapes
from configs.base import data


def get_config() -> ml_collections.ConfigDict:
    """The shapes Mask R-CNN experiment with a semantic head, on the panoptic shapes."""
    config = mask_rcnn_shapes.get_config()
    config.data = data.panoptic_shapes(max_instances=8)
    config.model.name = "panoptic_fpn"
    config.model.semantic_channels = 64
    config.model.semantic_norm = "group"
    # total = instance losses + semantic_loss_weight x semantic cross-entropy.
    config.model.semantic_loss_weight = 0.5
    # Fusion (detectron2's defaults): instances of score >= 0.5, skipped when more than half
    # taken; stuff segments of fewer pixels than the limit dropped. 4,096 px at COCO's
    # ~800 x 1333 images is about 0.4% of the image: 64 px at 128 x 128.
    config.model.instance_score_threshold = 0.5
    config.model.overlap_threshold = 0.5
    config.model.stuff_area_limit = 64
    return config
