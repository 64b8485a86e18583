"""Mask R-CNN (ResNet-18-FPN, GroupNorm) on the built-in synthetic shapes dataset.

Sized to reach COCO mask AP >= 0.60 and box AP >= 0.65 on the validation split within
45 minutes of training on 2 CPU cores, from scratch (no pretrained weights).
Run: python -m jaxseg.main --config=configs/mask_rcnn_shapes.py --workdir=DIR
"""

import ml_collections

from configs.base import data, loop


def get_config() -> ml_collections.ConfigDict:
    """The shapes Mask R-CNN experiment: the default loop on the shapes data."""
    config = loop.get_config()
    config.batch_size = 4
    config.eval_batch_size = 8
    config.num_train_steps = 4000
    config.learning_rate = 1e-3
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 500
    config.num_prediction_images = 8

    config.data = data.shapes(max_instances=8)

    config.model = ml_collections.ConfigDict()
    config.model.name = "mask_rcnn"
    config.model.backbone = "resnet18"
    # "group" trains from scratch at small batches; "frozen_batch" is for pretrained weights.
    config.model.backbone_norm = "group"
    config.model.backbone_width = 32
    # An ImageNet ResNet file (torchvision / timm state dict, see jaxseg.models.pretrained)
    # replacing the backbone's random init; it needs backbone_width 64 and a BatchNorm
    # backbone_norm ("frozen_batch"). None: random init.
    config.model.pretrained = ml_collections.FieldReference(None, field_type=str)
    config.model.fpn_channels = 64
    # One anchor size per pyramid level P2..P6 (pixels), each at every aspect ratio.
    config.model.anchor_sizes = (16.0, 32.0, 64.0, 128.0, 256.0)
    config.model.aspect_ratios = (0.5, 1.0, 2.0)
    config.model.rpn_batch_size_per_image = 128
    config.model.rpn_pre_nms_topk_train = 500
    config.model.rpn_post_nms_topk_train = 250
    config.model.rpn_pre_nms_topk_test = 500
    config.model.rpn_post_nms_topk_test = 250
    config.model.roi_batch_size_per_image = 128
    # Foreground RoIs per image the mask head trains on (fewer = faster step).
    config.model.mask_rois_per_image = 32
    config.model.box_head_dim = 256
    config.model.mask_head_channels = 64
    # "roi_align" or "roi_pool": the RoI feature extractor of the box and mask heads.
    config.model.roi_extractor = "roi_align"
    config.model.detections_per_image = 100
    config.model.score_threshold = 0.05
    config.model.test_nms_threshold = 0.5
    config.model.mask_threshold = 0.5
    config.model.dtype = "float32"
    # XLA:CPU-friendly custom-gradient layers; turn off on GPU/TPU.
    config.model.fast_cpu_ops = True
    # Recompute the backbone's residual blocks in the backward pass (saves memory).
    config.model.remat = False

    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 10.0
    config.optimizer.warmup_steps = 200
    return config
