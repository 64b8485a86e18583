"""Region Proposal Network (Faster R-CNN) on a feature pyramid, with static shapes.

The head is shared by all pyramid levels (a 3x3 conv + ReLU, then 1x1 convs giving one
objectness logit and four box deltas per anchor). Its outputs are flattened level by
level, row-major over the grid, anchor by anchor: the order of `AnchorGenerator`.

Training targets follow detectron2: every anchor (inside the image or not) is matched to
the ground truth (IoU >= 0.7 positive, < 0.3 negative, low-quality matches allowed) and
`batch_size` anchors are sampled, at most half of them positive. Losses are normalized
as detectron2 does: both the objectness and the box losses are sums over the sampled
anchors (the box loss over the positive ones) divided by
`num_images * batch_size`, the number of sampled anchors the batch would hold if no
image ran short.

Proposals: per level the `pre_nms_topk` anchors with the highest objectness, decoded
and clipped to the image's own (unpadded) extent, which may be traced; non-maximum
suppression at `nms_threshold` within each level (detectron2 runs `batched_nms` with the
level as the class); the `post_nms_topk` best survivors over all levels. Shapes never
depend on the data: missing proposals are padded and flagged invalid.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.ops import BoxCoder, batched_nms, clip_boxes, match_boxes, sample_balanced, valid_box_mask

# detectron2's RPN box coder: unit weights on (dx, dy, dw, dh).
RPN_BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def smooth_l1(x, beta: float):
    """Elementwise smooth L1 of `x` (any shape, float32); `beta < 1e-5` gives plain L1."""
    absolute = jnp.abs(x)
    if beta < 1e-5:
        return absolute
    return jnp.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


class RPNHead(nn.Module):
    """Shared RPN head: `[N, H_l, W_l, C]` maps -> per-anchor objectness and deltas.

    Attributes:
      num_anchors: anchors per grid cell (the same on every level).
      dtype: computation dtype; parameters stay float32.
    """

    num_anchors: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pyramid: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """`pyramid`: maps `[N, H_l, W_l, C]` of equal N and C.

        Returns `(objectness [N, A] float32, deltas [N, A, 4] float32)` with
        `A = sum_l H_l * W_l * num_anchors`.
        """
        init = nn.initializers.normal(0.01)
        channels = pyramid[0].shape[-1]
        conv = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), kernel_init=init, dtype=self.dtype, name="conv")
        objectness = nn.Conv(self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype, name="objectness")
        box = nn.Conv(4 * self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype, name="deltas")
        logits, deltas = [], []
        for features in pyramid:
            hidden = nn.relu(conv(features))
            num_images = features.shape[0]
            logits.append(objectness(hidden).reshape(num_images, -1))
            deltas.append(box(hidden).reshape(num_images, -1, 4))
        return (jnp.concatenate(logits, axis=1).astype(jnp.float32),
                jnp.concatenate(deltas, axis=1).astype(jnp.float32))


class RPNTargets(NamedTuple):
    """Sampled anchors of one image.

    anchor_indices: `[B] int32` sampled anchors (0 in unused slots).
    labels: `[B] int32` 1 positive, 0 negative, -1 unused slot.
    box_targets: `[B, 4] float32` deltas from each anchor to its matched ground truth.
    """

    anchor_indices: jax.Array
    labels: jax.Array
    box_targets: jax.Array


def rpn_targets(anchors, gt_boxes, gt_valid, key, *, batch_size: int, positive_fraction: float,
                fg_iou_threshold: float, bg_iou_threshold: float) -> RPNTargets:
    """Matches `anchors [A, 4]` to `gt_boxes [G, 4]` (valid where `gt_valid [G]` bool) and samples.

    `key` is this image's sampling key. With no valid ground truth every anchor is negative.
    """
    matched_gt, labels = match_boxes(
        gt_boxes, anchors, gt_valid,
        high_threshold=fg_iou_threshold, low_threshold=bg_iou_threshold, allow_low_quality_matches=True)
    indices, _, sampled_labels = sample_balanced(labels, key, batch_size, positive_fraction)
    gt_of_sample = jnp.asarray(gt_boxes, jnp.float32)[matched_gt[indices]]
    box_targets = RPN_BOX_CODER.encode(gt_of_sample, jnp.asarray(anchors)[indices])
    return RPNTargets(indices, sampled_labels, box_targets)


def rpn_losses(objectness, deltas, targets: RPNTargets, *, beta: float) -> tuple[jax.Array, jax.Array]:
    """Unnormalized losses of one image: `objectness [A]`, `deltas [A, 4]` float32.

    Returns `(objectness_sum, box_sum)` float32 scalars: binary cross-entropy summed over
    the sampled anchors, smooth L1 (`beta`) summed over the positive ones.
    """
    logits = objectness[targets.anchor_indices]
    sampled = targets.labels >= 0
    positive = targets.labels == 1
    bce = optax.sigmoid_binary_cross_entropy(logits, positive.astype(jnp.float32))
    objectness_sum = jnp.sum(jnp.where(sampled, bce, 0.0))
    box_error = smooth_l1(deltas[targets.anchor_indices] - targets.box_targets, beta).sum(axis=-1)
    box_sum = jnp.sum(jnp.where(positive, box_error, 0.0))
    return objectness_sum, box_sum


def propose(objectness, deltas, anchors, level_counts: Sequence[int], image_hw, *,
            pre_nms_topk: int, post_nms_topk: int, nms_threshold: float) -> tuple[jax.Array, jax.Array]:
    """Proposals of one image from `objectness [A]`, `deltas [A, 4]`, `anchors [A, 4]` float32.

    `level_counts` gives the anchors of each level (static). `image_hw` is the image's
    valid `(height, width)` to clip to: Python numbers, or a traced `[2]` array (one row
    of a batch's `[N, 2]` extents under `vmap`); boxes left empty by clipping are invalid.
    Returns `(boxes [post_nms_topk, 4] float32, valid [post_nms_topk] bool)`, best first;
    invalid slots hold zero boxes.
    """
    anchors = np.asarray(anchors)
    scores, boxes, levels = [], [], []
    start = 0
    for level, count in enumerate(level_counts):
        k = min(pre_nms_topk, count)
        level_scores, index = jax.lax.top_k(objectness[start:start + count], k)
        index = index + start
        scores.append(level_scores)
        boxes.append(RPN_BOX_CODER.decode(deltas[index], jnp.asarray(anchors)[index]))
        levels.append(jnp.full((k,), level, jnp.int32))
        start += count
    scores, boxes, levels = (jnp.concatenate(values) for values in (scores, boxes, levels))
    boxes = clip_boxes(boxes, image_hw[0], image_hw[1])
    valid = valid_box_mask(boxes) & jnp.isfinite(scores)
    keep = batched_nms(boxes, scores, levels, nms_threshold, post_nms_topk, valid=valid)
    kept = keep >= 0
    proposals = jnp.where(kept[:, None], boxes[jnp.maximum(keep, 0)], 0.0)
    return jax.lax.stop_gradient(proposals), kept


def rpn_normalizer(num_images: int, batch_size: int) -> float:
    """detectron2's RPN loss divisor: the sampled-anchor capacity of the batch."""
    return float(max(num_images * batch_size, 1))


def anchors_per_cell(sizes_per_level: Sequence[Sequence[float]], aspect_ratios: Sequence[float]) -> int:
    """Anchors per grid cell; the shared head needs the same count on every level."""
    counts = {len(sizes) * len(aspect_ratios) for sizes in sizes_per_level}
    if len(counts) != 1:
        raise ValueError(f"anchor_sizes must give every level the same number of sizes, got {sizes_per_level}")
    return counts.pop()

