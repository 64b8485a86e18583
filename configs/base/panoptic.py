"""The `config.model` fields that make a Mask R-CNN experiment a Panoptic FPN one."""

import ml_collections


def panoptic_fpn(model: ml_collections.ConfigDict, *, semantic_channels: int, stuff_area_limit: int) -> None:
    """Turns the Mask R-CNN section `model` into Panoptic FPN with detectron2's semantic head
    (`semantic_channels` wide, GroupNorm, loss weight 0.5) and fusion thresholds: instances
    of score >= 0.5, skipped when more than half of their pixels are taken; stuff segments
    of fewer than `stuff_area_limit` pixels dropped."""
    model.name = "panoptic_fpn"
    model.semantic_channels = semantic_channels
    model.semantic_norm = "group"
    # total = instance losses + semantic_loss_weight x semantic cross-entropy.
    model.semantic_loss_weight = 0.5
    model.instance_score_threshold = 0.5
    model.overlap_threshold = 0.5
    model.stuff_area_limit = stuff_area_limit
