"""Mask R-CNN ResNet-50-FPN at 512x512 with the detectron2 / torchvision model sizes.

It exists to compare this implementation's speed with the usual PyTorch Mask R-CNN
(torchvision `maskrcnn_resnet50_fpn`) at the same image size and batch: the backbone,
FPN, anchors, RPN and RoI-head sizes are the standard ones, and it trains with SGD as
that reference does. It uses the synthetic shapes data of `mask_rcnn_shapes`, scaled to
512x512; it is not sized for accuracy from scratch (the frozen batch norm expects
pretrained weights).
Benchmark: python benchmarks/mask_rcnn.py --config=configs/mask_rcnn_r50_fpn.py --torch
"""

import ml_collections

from configs import mask_rcnn_shapes


def get_config() -> ml_collections.ConfigDict:
    """The shapes Mask R-CNN experiment with a standard ResNet-50-FPN model at 512x512."""
    config = mask_rcnn_shapes.get_config()
    config.batch_size = 2
    config.eval_batch_size = 2

    config.data.image_size = 512

    model = config.model
    model.backbone = "resnet50"
    model.backbone_width = 64
    model.backbone_norm = "frozen_batch"
    model.fpn_channels = 256
    model.anchor_sizes = (32.0, 64.0, 128.0, 256.0, 512.0)
    model.rpn_batch_size_per_image = 256
    model.rpn_pre_nms_topk_train = 2000
    model.rpn_post_nms_topk_train = 1000
    model.rpn_pre_nms_topk_test = 1000
    model.rpn_post_nms_topk_test = 1000
    model.roi_batch_size_per_image = 512
    # None: the mask head trains on every sampled foreground RoI, as detectron2 does.
    model.mask_rois_per_image = ml_collections.FieldReference(None, field_type=int)
    model.box_head_dim = 1024
    model.mask_head_channels = 256

    # detectron2's SGD (lr 0.02 at batch 16) scaled linearly to batch 2, no clipping.
    config.optimizer.name = "sgd"
    config.learning_rate = 0.0025
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = ml_collections.FieldReference(None, field_type=float)
    return config
