"""IoU-based assignment of anchors/proposals to ground truth (the R-CNN matcher).

Each anchor takes the valid ground truth it overlaps most (ties: lowest index) and a
label from its best IoU: 1 (positive) if `>= high_threshold`, 0 (negative) if
`< low_threshold`, -1 (ignored) in between. With `allow_low_quality_matches`, every
anchor whose IoU with some ground truth equals that ground truth's best IoU over all
anchors (all ties) becomes positive too, keeping its argmax match, as in detectron2 and
torchvision. Unlike them, a ground truth that overlaps no anchor at all (best IoU 0)
promotes nothing, rather than every anchor.
"""
import jax.numpy as jnp

from jaxseg.ops.boxes import box_iou, check_boxes

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def match(iou, gt_valid=None, *, high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True):
    """Matches anchors to ground truth from `iou [G, A]` float32 (ground truth x anchors).

    `gt_valid [G]` bool marks real ground truth (padding never matches); by default all
    are valid. Returns `(matched_gt [A] int32, labels [A] int32)`; with no valid ground
    truth every label is 0 and every `matched_gt` is 0.
    """
    iou = jnp.asarray(iou, jnp.float32)
    if iou.ndim != 2:
        raise ValueError(f"iou must have shape [G, A], got {iou.shape}")
    if not low_threshold <= high_threshold:
        raise ValueError(f"low_threshold {low_threshold} must not exceed high_threshold {high_threshold}")
    num_gt, num_anchors = iou.shape
    gt_valid = jnp.ones((num_gt,), bool) if gt_valid is None else jnp.asarray(gt_valid)
    if gt_valid.shape != (num_gt,) or gt_valid.dtype != jnp.bool_:
        raise ValueError(f"gt_valid must be bool of shape [{num_gt}], got {gt_valid.dtype}{gt_valid.shape}")
    if num_gt == 0 or num_anchors == 0:
        return jnp.zeros((num_anchors,), jnp.int32), jnp.full((num_anchors,), NEGATIVE, jnp.int32)

    # Padding gets IoU -1: below every real IoU, so never an argmax unless all are padding.
    quality = jnp.where(gt_valid[:, None], iou, -1.0)
    matched_gt = jnp.argmax(quality, axis=0).astype(jnp.int32)
    best_iou = jnp.max(quality, axis=0)
    labels = jnp.where(best_iou >= high_threshold, POSITIVE, jnp.where(best_iou < low_threshold, NEGATIVE, IGNORE))
    if allow_low_quality_matches:
        best_per_gt = jnp.max(quality, axis=1, keepdims=True)
        is_best = (quality == best_per_gt) & (best_per_gt > 0.0)
        labels = jnp.where(jnp.any(is_best, axis=0), POSITIVE, labels)
    return matched_gt, labels.astype(jnp.int32)


def match_boxes(gt_boxes, anchors, gt_valid=None, **thresholds):
    """`match` on the IoU of `gt_boxes [G, 4]` and `anchors [A, 4]` float32.

    Keyword arguments are `match`'s thresholds. Returns `(matched_gt [A], labels [A])` int32.
    """
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", rank=2)
    anchors = check_boxes(anchors, "anchors", rank=2)
    return match(box_iou(gt_boxes, anchors), gt_valid, **thresholds)
