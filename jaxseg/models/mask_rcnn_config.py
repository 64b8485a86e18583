"""Mask R-CNN's config schema and registration: `config.model.name = "mask_rcnn"`.

Every attribute of `MaskRCNN` but `num_classes` (which comes from `config.data`) may be
set in `config.model`; what a config leaves out takes the module's default. So may
`pretrained`: an ImageNet ResNet file for the backbone (`jaxseg.models.pretrained_config`).
"""

from typing import Any

from jaxseg import schema
from jaxseg.errors import ConfigError
from jaxseg.models import factory, norms, pretrained_config, resnet, roi_heads
from jaxseg.models.mask_rcnn import RPN_LEVELS, MaskRCNN

# (pre-NMS top-k per level, post-NMS top-k per image) of training and inference.
RPN_TOPK_PAIRS = (
    ("rpn_pre_nms_topk_train", "rpn_post_nms_topk_train"),
    ("rpn_pre_nms_topk_test", "rpn_post_nms_topk_test"),
)
_POSITIVE_INTS = (
    "backbone_width",
    "fpn_channels",
    "rpn_batch_size_per_image",
    "rpn_pre_nms_topk_train",
    "rpn_post_nms_topk_train",
    "rpn_pre_nms_topk_test",
    "rpn_post_nms_topk_test",
    "roi_batch_size_per_image",
    "box_head_dim",
    "mask_head_channels",
    "mask_head_convs",
    "detections_per_image",
    "roi_sampling_ratio",
)
_FRACTIONS = (
    "rpn_fg_iou_threshold",
    "rpn_bg_iou_threshold",
    "rpn_positive_fraction",
    "roi_iou_threshold",
    "roi_positive_fraction",
    "rpn_nms_threshold",
    "test_nms_threshold",
    "mask_threshold",
)


def _fpn_norm(value: Any, path: str) -> Any:
    """None (or "none" in a config) or "group"."""
    return None if schema.one_of(None, "none", "group")(value, path) == "none" else value


def _anchor_sizes(value: Any, path: str) -> tuple[tuple[float, ...], ...]:
    """One size per level (`(16, 32, ...)`) or several (`((16, 20), (32, 40), ...)`)."""
    message = (
        f"{path}={value!r} must give {len(RPN_LEVELS)} levels (P2..P6), each a number > 0 "
        "or a non-empty tuple of them, the same count on every level."
    )
    if not isinstance(value, (tuple, list)):
        raise ConfigError(message)
    levels = [tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in value]
    if len(levels) != len(RPN_LEVELS) or len({len(level) for level in levels}) != 1:
        raise ConfigError(message)
    try:
        return tuple(schema.positive_numbers(level, path) for level in levels)
    except ConfigError:
        raise ConfigError(message) from None


def check_relations(model: Any, config: Any, path: str) -> None:
    """Rules across fields: top-k pairs, IoU thresholds, mask RoIs, the image size."""
    for pre_field, post_field in RPN_TOPK_PAIRS:
        pre, post = getattr(model, pre_field), getattr(model, post_field)
        if post > len(RPN_LEVELS) * pre:
            raise ConfigError(
                f"{path}.{post_field}={post} must not exceed {len(RPN_LEVELS)} x "
                f"{path}.{pre_field}={pre} (the pre-NMS top-k is per level)."
            )
    if model.rpn_bg_iou_threshold > model.rpn_fg_iou_threshold:
        raise ConfigError(
            f"{path}.rpn_bg_iou_threshold={model.rpn_bg_iou_threshold} must not exceed "
            f"{path}.rpn_fg_iou_threshold={model.rpn_fg_iou_threshold}."
        )
    mask_rois, rois = model.mask_rois_per_image, model.roi_batch_size_per_image
    if mask_rois is not None and mask_rois > rois:
        raise ConfigError(
            f"{path}.mask_rois_per_image={mask_rois} must not exceed "
            f"{path}.roi_batch_size_per_image={rois}."
        )
    size, divisor = config.data.image_size, resnet.INPUT_DIVISOR
    if size % divisor:
        raise ConfigError(
            f"config.data.image_size={size} must be divisible by {divisor}: Mask R-CNN "
            f"needs multiples of {divisor} (the stride of the ResNet's last stage)."
        )


# How each `MaskRCNN` attribute is read from `config.model` (Panoptic FPN reads them too).
FIELD_RULES = {
    **{name: schema.integer(1) for name in _POSITIVE_INTS},
    **{name: schema.fraction("(0, 1]") for name in _FRACTIONS},
    "backbone": schema.one_of(*resnet.RESNETS),
    "backbone_norm": schema.one_of(*norms.NORMS),
    "fpn_norm": _fpn_norm,
    "roi_extractor": schema.one_of(*roi_heads.EXTRACTORS),
    "dtype": schema.dtype,
    "freeze_at": schema.integer(0),
    "mask_rois_per_image": schema.optional(schema.integer(1)),
    "fast_cpu_ops": schema.boolean,
    "remat": schema.boolean,
    "score_threshold": schema.fraction("[0, 1)"),
    "anchor_sizes": _anchor_sizes,
    "aspect_ratios": schema.positive_numbers,
    **pretrained_config.PIXEL_RULES,
}

MaskRCNNConfig = pretrained_config.with_pretrained(
    schema.from_module(MaskRCNN, FIELD_RULES, exclude=("num_classes",), cross_check=check_relations),
    pretrained_config.Backbone(submodule="resnet", norm_field="backbone_norm"),
)

build_mask_rcnn = factory.register_model("mask_rcnn", MaskRCNN, MaskRCNNConfig, task="instance")
