"""Mask R-CNN RoI heads: RoI sampling and targets, feature pooling, box and mask heads.

Class ids: 0 is the background, 1..K-1 are objects (K = `num_classes`). The box head
scores K classes and regresses K-1 class-specific boxes (channel `c - 1` for class c);
the mask head predicts K-1 class-specific 28x28 mask logits the same way.

Training (detectron2's rules): the ground-truth boxes are appended to the proposals, every
candidate is matched at IoU 0.5 (>= 0.5 foreground with its ground truth's class, < 0.5
background; invalid proposals and padding are never sampled), and `batch_size` candidates
are sampled with at most `positive_fraction` foreground. `sample_balanced` puts the
positives first, so the first `int(batch_size * positive_fraction)` slots hold every
sampled foreground RoI: the mask head runs on a fixed number of RoIs per image.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxseg.models.layers import ConvTranspose2x2
from jaxseg.ops import BoxCoder, box_iou, clip_boxes, fpn_levels, match, multilevel_roi_align, roi_pool
from jaxseg.ops import batched_nms, mask_targets, sample_balanced, valid_box_mask
from jaxseg.models.rpn import smooth_l1

# detectron2's RoI box coder weights.
ROI_BOX_CODER = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
EXTRACTORS = ("roi_align", "roi_pool")
# FPN level assignment of RoIs (FPN paper, eq. 1): a 224-pixel box goes to P4.
CANONICAL_LEVEL = 4
CANONICAL_SIZE = 224.0
# detectron2's c2_msra_fill for the mask convs: He normal, fan_out.
_MSRA_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BoxHead(nn.Module):
    """Two fully connected layers, then class scores and class-specific box deltas.

    Attributes:
      num_classes: K, background included.
      fc_dim: width of both hidden layers (1024 in Mask R-CNN).
      dtype: computation dtype; parameters stay float32.
    """

    num_classes: int
    fc_dim: int = 1024
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`pooled [R, h, w, C]` -> `(class_logits [R, K], deltas [R, K - 1, 4])` float32."""
        x = pooled.reshape(pooled.shape[0], -1)
        for index in range(2):
            x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name=f"fc{index + 1}")(x))
        logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                          name="class_logits")(x)
        deltas = nn.Dense(4 * (self.num_classes - 1), kernel_init=nn.initializers.normal(0.001),
                          dtype=self.dtype, name="box_deltas")(x)
        return logits.astype(jnp.float32), deltas.reshape(x.shape[0], -1, 4).astype(jnp.float32)


class MaskHead(nn.Module):
    """`num_convs` 3x3 convs + ReLU, a 2x2 stride-2 transposed conv + ReLU, 1x1 class logits.

    Attributes:
      num_classes: K, background included; K - 1 mask channels are predicted.
      channels: width of the convs (256 in Mask R-CNN).
      num_convs: number of 3x3 convs (4).
      dtype: computation dtype; parameters stay float32.
    """

    num_classes: int
    channels: int = 256
    num_convs: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        """`pooled [R, m, m, C]` -> mask logits `[R, 2m, 2m, K - 1]` float32."""
        x = pooled
        for index in range(self.num_convs):
            x = nn.Conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_MSRA_INIT,
                        dtype=self.dtype, name=f"conv{index + 1}")(x)
            x = nn.relu(x)
        x = nn.relu(ConvTranspose2x2(self.channels, kernel_init=_MSRA_INIT, dtype=self.dtype, name="upsample")(x))
        logits = nn.Conv(self.num_classes - 1, (1, 1), kernel_init=nn.initializers.normal(0.001),
                         dtype=self.dtype, name="mask_logits")(x)
        return logits.astype(jnp.float32)


class RoITargets(NamedTuple):
    """Sampled RoIs of one image, `S = batch_size` slots, positives first.

    boxes: `[S, 4] float32` RoIs (proposals or ground-truth boxes).
    valid: `[S] bool` slots holding a sampled RoI.
    classes: `[S] int32` target class: the matched ground truth's label if foreground, else 0.
    matched_gt: `[S] int32` index of the matched ground truth (meaningful for foreground).
    box_targets: `[S, 4] float32` deltas from each RoI to its matched ground truth.
    """

    boxes: jax.Array
    valid: jax.Array
    classes: jax.Array
    matched_gt: jax.Array
    box_targets: jax.Array


def roi_targets(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, key, *, batch_size: int,
                positive_fraction: float, iou_threshold: float) -> RoITargets:
    """Appends ground truth to `proposals [P, 4]` (valid: `proposal_valid [P]`), matches and samples.

    `gt_boxes [G, 4]` float32, `gt_labels [G]` int, `gt_valid [G]` bool; `key` is this
    image's sampling key.
    """
    candidates = jnp.concatenate([proposals, gt_boxes], axis=0)
    candidate_valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
    matched_gt, labels = match(box_iou(gt_boxes, candidates), gt_valid, high_threshold=iou_threshold,
                               low_threshold=iou_threshold, allow_low_quality_matches=False)
    labels = jnp.where(candidate_valid, labels, -1)
    indices, valid, sampled_labels = sample_balanced(labels, key, batch_size, positive_fraction)
    boxes = candidates[indices]
    matched = matched_gt[indices]
    classes = jnp.where(sampled_labels == 1, jnp.asarray(gt_labels, jnp.int32)[matched], 0)
    box_targets = ROI_BOX_CODER.encode(gt_boxes[matched], boxes)
    return RoITargets(jax.lax.stop_gradient(boxes), valid, classes, matched, box_targets)


def mask_training_targets(targets: RoITargets, gt_masks, count: int, mask_size: int):
    """The first `count` sampled RoIs of one image (every foreground one, see the module docstring).

    `gt_masks [G, H, W]`. Returns `(boxes [count, 4] float32, classes [count] int32,
    mask_targets [count, mask_size, mask_size] float32 (0/1), foreground [count] bool)`.
    """
    boxes, classes = targets.boxes[:count], targets.classes[:count]
    foreground = targets.valid[:count] & (classes > 0)
    return boxes, classes, mask_targets(gt_masks, targets.matched_gt[:count], boxes, mask_size), foreground


def pool_features(pyramid: Sequence[jax.Array], boxes, output_size: int, extractor: str, sampling_ratio: int,
                  min_level: int = 2):
    """Features of `boxes [R, 4]` from one image's maps `pyramid` (`[H_l, W_l, C]`, level `min_level + l`).

    Each box is pooled on its FPN level (`fpn_levels`). `extractor` is "roi_align"
    (aligned, `sampling_ratio` samples per bin side) or "roi_pool" (quantized max pooling,
    computed on every level and selected per box). Returns `[R, output_size, output_size, C]`.
    """
    if extractor == "roi_align":
        return multilevel_roi_align(pyramid, boxes, output_size, sampling_ratio, aligned=True,
                                    min_level=min_level, canonical_level=CANONICAL_LEVEL,
                                    canonical_size=CANONICAL_SIZE)
    if extractor != "roi_pool":
        raise ValueError(f"extractor must be one of {EXTRACTORS}, got {extractor!r}")
    max_level = min_level + len(pyramid) - 1
    levels = fpn_levels(boxes, min_level, max_level, CANONICAL_LEVEL, CANONICAL_SIZE)
    pooled = 0.0
    for index, level_map in enumerate(pyramid):
        level_pooled = roi_pool(level_map, boxes, output_size, 2.0 ** -(min_level + index))
        pooled = pooled + jnp.where((levels == min_level + index)[:, None, None, None], level_pooled, 0.0)
    return pooled


def box_head_losses(class_logits, deltas, targets: RoITargets, *, beta: float) -> tuple[jax.Array, jax.Array]:
    """Unnormalized box losses of one image; `class_logits [S, K]`, `deltas [S, K - 1, 4]`.

    Returns `(classification_sum, regression_sum)` float32 scalars: softmax cross-entropy
    summed over sampled RoIs, smooth L1 (`beta`) of the target class's deltas summed over
    the foreground ones.
    """
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(class_logits, targets.classes)
    classification = jnp.sum(jnp.where(targets.valid, cross_entropy, 0.0))
    foreground = targets.valid & (targets.classes > 0)
    class_deltas = jnp.take_along_axis(deltas, jnp.maximum(targets.classes - 1, 0)[:, None, None], axis=1)[:, 0]
    regression = smooth_l1(class_deltas - targets.box_targets, beta).sum(axis=-1)
    return classification, jnp.sum(jnp.where(foreground, regression, 0.0))


def select_class_channel(mask_logits, classes):
    """`mask_logits [R, M, M, K - 1]`, `classes [R]` int (1..K-1) -> `[R, M, M]` of each class."""
    channel = jnp.maximum(classes - 1, 0)[:, None, None, None]
    return jnp.take_along_axis(mask_logits, channel, axis=3)[..., 0]


def mask_loss_sum(mask_logits, mask_targets, foreground) -> jax.Array:
    """Per-pixel BCE of `mask_logits [F, M, M]` vs `mask_targets [F, M, M]`, summed over `foreground [F]`."""
    bce = optax.sigmoid_binary_cross_entropy(mask_logits, mask_targets).sum(axis=(1, 2))
    return jnp.sum(jnp.where(foreground, bce, 0.0))


def detections(class_logits, deltas, proposals, proposal_valid, image_hw, *,
               score_threshold: float, nms_threshold: float, max_detections: int):
    """Final detections of one image from the box head on its proposals.

    Args:
      class_logits: `[P, K]`; deltas: `[P, K - 1, 4]`; proposals: `[P, 4]`; proposal_valid `[P]` bool.
      image_hw: the image's valid `(height, width)` to clip to: Python numbers or a traced
        `[2]` array (one row of a batch's extents under `vmap`).

    Returns `(boxes [D, 4] float32, scores [D] float32, classes [D] int32 (1..K-1), valid [D] bool)`
    with `D = max_detections`, best first: each proposal gives one candidate per object class
    (softmax score, class-specific decoded and clipped box); candidates scoring above
    `score_threshold` go through class-aware NMS. Invalid slots are zero.
    """
    num_proposals, num_objects = deltas.shape[:2]
    scores = jax.nn.softmax(class_logits, axis=-1)[:, 1:]
    boxes = clip_boxes(ROI_BOX_CODER.decode(deltas, proposals[:, None, :]), image_hw[0], image_hw[1])
    classes = jnp.broadcast_to(jnp.arange(1, num_objects + 1, dtype=jnp.int32), (num_proposals, num_objects))
    candidate = proposal_valid[:, None] & valid_box_mask(boxes)
    boxes, scores, classes, candidate = (values.reshape(num_proposals * num_objects, *values.shape[2:])
                                         for values in (boxes, scores, classes, candidate))
    keep = batched_nms(boxes, scores, classes, nms_threshold, max_detections, valid=candidate,
                       score_threshold=score_threshold)
    valid = keep >= 0
    index = jnp.maximum(keep, 0)
    return (jnp.where(valid[:, None], boxes[index], 0.0), jnp.where(valid, scores[index], 0.0),
            jnp.where(valid, classes[index], 0), valid)
