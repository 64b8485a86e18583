"""Mask R-CNN (He et al., 2017) in Flax Linen: ResNet-FPN, RPN, box and mask RoI heads.

Two entry points, both `jax.jit`-able with shapes fixed by the fields and input shapes:

* `model.apply(variables, images, gt_boxes, gt_labels, gt_masks, gt_valid, train=True,
  image_hw=None, method=MaskRCNN.losses, rngs={"sampling": key})` -> dict of float32
  scalar losses `rpn_objectness`, `rpn_box`, `box_classification`, `box_regression`,
  `mask`, `total`.
  The `"sampling"` key is split into one key per image (anchor and RoI sampling never
  share random numbers across images). With `backbone_norm="batch"` and `train=True`,
  pass `mutable=["batch_stats"]`. With `mutable=["intermediates"]` the sampled anchors
  (`RPNTargets`) and RoIs (`RoITargets`), batched over images, are returned as well.
* `model.apply(variables, images, image_hw=None, paste=True, method=MaskRCNN.detect)` ->
  dict with `boxes [N, D, 4]` float32, `scores [N, D]` float32, `classes [N, D]` int32
  (1..K-1), `valid [N, D]` bool (`D = detections_per_image`) and, with `paste=True`,
  `masks [N, D, H, W]` float32 mask probabilities pasted into the canvas (binarize with
  `masks >= model.mask_threshold`; zero for invalid slots). With `paste=False` it gives
  `mask_probabilities [N, D, M, M]` float32 instead (`M = MASK_SIZE = 28`: the sigmoid of
  the predicted class's mask channel, zero for invalid slots), to paste on the host at any
  resolution with `ops.paste_mask` / `ops.paste_binary_mask` (detectron2 pastes at the
  original image size); the device then never holds `D` full-size masks.

`model.init(key, images, method=MaskRCNN.detect)` creates every variable.

Images are `[N, H, W, 3]` float32 in [0, 1] (H, W divisible by 32), normalized inside
with `pixel_mean` / `pixel_std`. Each image may fill only the top-left of its padded
canvas: `image_hw [N, 2]` int (may be traced) gives each image's valid `(height, width)`,
each in `[1, H]` x `[1, W]`; None means the whole canvas. Proposals (training and test)
and detection boxes are clipped to each image's own extent, as detectron2 clips to the
image size; anchors, features and pasted masks still cover the canvas.

Ground truth is padded to a fixed `G`: `gt_boxes [N, G, 4]` (x1, y1, x2, y2 pixels),
`gt_labels [N, G]` int (1..K-1), `gt_masks [N, G, H, W]`, `gt_valid [N, G]` bool; an
image may have no valid object.

Loss normalization (detectron2): RPN losses are sums over the sampled anchors of the
batch divided by `N * rpn_batch_size_per_image`; box classification is the mean
cross-entropy over the sampled RoIs; box regression is the sum over foreground RoIs
divided by the number of sampled RoIs; the mask loss is the mean per-pixel BCE over the
foreground RoIs' target-class masks (0 when the batch has no foreground).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.fpn import FPN
from jaxseg.models.layers import IMAGENET_MEAN, IMAGENET_STD, normalize_pixels
from jaxseg.models.resnet import INPUT_DIVISOR, build_resnet
from jaxseg.models.roi_heads import (
    EXTRACTORS,
    BoxHead,
    MaskHead,
    box_head_losses,
    detections,
    mask_loss_sum,
    mask_training_targets,
    pool_features,
    roi_targets,
    select_class_channel,
)
from jaxseg.models.rpn import RPNHead, anchors_per_cell, propose, rpn_losses, rpn_normalizer, rpn_targets
from jaxseg.ops import AnchorGenerator, paste_masks

# Pyramid levels: the RPN sees P2..P6, the RoI heads P2..P5.
RPN_LEVELS = (2, 3, 4, 5, 6)
ROI_LEVELS = (2, 3, 4, 5)
BOX_POOL_SIZE = 7
MASK_POOL_SIZE = 14
MASK_SIZE = 2 * MASK_POOL_SIZE


class MaskRCNN(nn.Module):
    """Mask R-CNN with a ResNet-FPN backbone; see the module docstring for the API.

    Attributes:
      num_classes: K, background included (4 for shapes).
      backbone: ResNet name ("resnet18", "resnet34", "resnet50", "resnet101").
      backbone_norm: "frozen_batch", "batch" or "group".
      backbone_width: ResNet stem / res2 width (64 in the paper; smaller for tiny models).
      freeze_at: see `ResNet.freeze_at`.
      fpn_channels: channels of the pyramid, RPN and pooled features (256).
      fpn_norm: None or "group".
      fast_cpu_ops: XLA:CPU-fast backbone formulations (see `ResNet`); False on GPU/TPU.
      remat: rematerialize the backbone's residual blocks (see `ResNet.remat`).
      anchor_sizes: anchor sizes per level P2..P6, same count on every level.
      aspect_ratios: anchor height / width ratios.
      rpn_fg_iou_threshold, rpn_bg_iou_threshold: anchor matching (0.7 / 0.3).
      rpn_batch_size_per_image, rpn_positive_fraction: anchor sampling (256 / 0.5).
      rpn_pre_nms_topk_train, rpn_post_nms_topk_train: proposals per level before NMS and
        per image after NMS while training (2000 / 1000).
      rpn_pre_nms_topk_test, rpn_post_nms_topk_test: the same at inference (1000 / 1000).
      rpn_nms_threshold: proposal NMS IoU (0.7).
      roi_iou_threshold: RoI foreground IoU (0.5).
      roi_batch_size_per_image, roi_positive_fraction: RoI sampling (512 / 0.25).
      mask_rois_per_image: foreground RoIs per image given to the mask head while
        training; None means `int(roi_batch_size_per_image * roi_positive_fraction)`,
        every sampled foreground RoI. Fewer keeps a random subset of the foreground (the
        sampler orders them randomly) and saves most of a CPU training step: the mask
        head runs on this many RoIs whether or not they are foreground (at 128x128 with
        ResNet-18 and 256-channel heads, 128 -> 32 cut a 2-image step from 5.2 s to 1.2 s).
      box_head_dim: width of the box head's two fc layers (1024).
      mask_head_channels, mask_head_convs: the mask head's conv width and depth (256, 4).
      roi_extractor: "roi_align" or "roi_pool".
      roi_sampling_ratio: RoI Align samples per bin side (2).
      smooth_l1_beta: box-loss smooth L1 beta for RPN and RoI heads (0 = L1, detectron2).
      detections_per_image: D (100); the mask head runs on all D slots at inference.
      score_threshold: minimum class score of a detection (0.05).
      test_nms_threshold: class-aware NMS IoU at inference (0.5).
      mask_threshold: probability at which callers binarize `detect`'s masks (0.5).
      pixel_mean, pixel_std: per-channel image normalization (ImageNet's, in [0, 1] units).
      dtype: computation dtype; parameters and losses stay float32.
    """

    num_classes: int = 4
    backbone: str = "resnet50"
    backbone_norm: str = "frozen_batch"
    backbone_width: int = 64
    freeze_at: int = 0
    fpn_channels: int = 256
    fpn_norm: str | None = None
    fast_cpu_ops: bool = False
    remat: bool = False
    anchor_sizes: tuple = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_fg_iou_threshold: float = 0.7
    rpn_bg_iou_threshold: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_topk_train: int = 2000
    rpn_post_nms_topk_train: int = 1000
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_threshold: float = 0.7
    roi_iou_threshold: float = 0.5
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    mask_rois_per_image: int | None = None
    box_head_dim: int = 1024
    mask_head_channels: int = 256
    mask_head_convs: int = 4
    roi_extractor: str = "roi_align"
    roi_sampling_ratio: int = 2
    smooth_l1_beta: float = 0.0
    detections_per_image: int = 100
    score_threshold: float = 0.05
    test_nms_threshold: float = 0.5
    mask_threshold: float = 0.5
    pixel_mean: tuple = IMAGENET_MEAN
    pixel_std: tuple = IMAGENET_STD
    dtype: Any = jnp.float32

    def setup(self):
        self._check_fields()
        self.resnet = build_resnet(self.backbone, norm=self.backbone_norm, num_filters=self.backbone_width,
                                   freeze_at=self.freeze_at, fast_cpu_ops=self.fast_cpu_ops, remat=self.remat,
                                   dtype=self.dtype)
        self.fpn = FPN(self.fpn_channels, RPN_LEVELS[0], RPN_LEVELS[-1], self.fpn_norm, self.fast_cpu_ops,
                       self.dtype)
        self.rpn_head = RPNHead(anchors_per_cell(self.anchor_sizes, self.aspect_ratios), self.dtype)
        self.box_head = BoxHead(self.num_classes, self.box_head_dim, self.dtype)
        self.mask_head = MaskHead(self.num_classes, self.mask_head_channels, self.mask_head_convs, self.dtype)

    def _check_fields(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes must count the background and at least one class, got {self.num_classes}")
        if len(self.anchor_sizes) != len(RPN_LEVELS):
            raise ValueError(f"anchor_sizes must give sizes for the {len(RPN_LEVELS)} levels P2..P6, "
                             f"got {self.anchor_sizes}")
        if self.roi_extractor not in EXTRACTORS:
            raise ValueError(f"roi_extractor must be one of {EXTRACTORS}, got {self.roi_extractor!r}")
        if self.num_mask_rois > self.roi_batch_size_per_image:
            raise ValueError(f"mask_rois_per_image ({self.mask_rois_per_image}) must not exceed "
                             f"roi_batch_size_per_image ({self.roi_batch_size_per_image})")

    @property
    def num_mask_rois(self) -> int:
        """Foreground RoIs per image given to the mask head while training."""
        if self.mask_rois_per_image is None:
            return max(int(self.roi_batch_size_per_image * self.roi_positive_fraction), 1)
        return self.mask_rois_per_image

    def anchor_generator(self) -> AnchorGenerator:
        """The anchors of P2..P6 (strides 4..64)."""
        return AnchorGenerator(sizes=tuple(tuple(s) for s in self.anchor_sizes),
                               aspect_ratios=tuple(self.aspect_ratios),
                               strides=tuple(2**level for level in RPN_LEVELS))

    def _features(self, images, train: bool) -> list[jax.Array]:
        pyramid = self.fpn(self.resnet(normalize_pixels(images, self.pixel_mean, self.pixel_std), train))
        return [pyramid[f"P{level}"] for level in RPN_LEVELS]

    def _proposals(self, pyramid, canvas_hw: tuple[int, int], extents, train: bool):
        """RPN outputs, the canvas's anchors and proposals clipped to `extents [N, 2]` float32."""
        objectness, deltas = self.rpn_head(pyramid)
        generator = self.anchor_generator()
        anchors = generator(*canvas_hw)
        level_counts = generator.num_anchors_per_level(*canvas_hw)
        pre, post = ((self.rpn_pre_nms_topk_train, self.rpn_post_nms_topk_train) if train
                     else (self.rpn_pre_nms_topk_test, self.rpn_post_nms_topk_test))

        def one_image(image_objectness, image_deltas, extent):
            return propose(image_objectness, image_deltas, anchors, level_counts, extent,
                           pre_nms_topk=pre, post_nms_topk=post, nms_threshold=self.rpn_nms_threshold)

        proposals, valid = jax.vmap(one_image)(objectness, deltas, extents)
        return objectness, deltas, anchors, proposals, valid

    def _pool(self, pyramid, boxes, output_size: int):
        """`boxes [N, R, 4]` -> `[N * R, s, s, C]` features from P2..P5."""
        roi_maps = pyramid[:len(ROI_LEVELS)]

        def one_image(maps, image_boxes):
            return pool_features(maps, image_boxes, output_size, self.roi_extractor, self.roi_sampling_ratio,
                                 ROI_LEVELS[0])

        pooled = jax.vmap(one_image)(roi_maps, boxes)
        return pooled.reshape(-1, *pooled.shape[2:])

    def losses(self, images, gt_boxes, gt_labels, gt_masks, gt_valid, *, train: bool = True,
               image_hw=None) -> dict:
        """Training losses; see the module docstring for shapes and normalization.

        `image_hw`: None or `[N, 2]` int valid (height, width) per image; proposals are
        clipped to it. Needs the `'sampling'` rng. Returns float32 scalars
        `rpn_objectness`, `rpn_box`, `box_classification`, `box_regression`, `mask` and
        their sum `total`.
        """
        check_ground_truth(images, gt_boxes, gt_labels, gt_masks, gt_valid)
        pyramid = self._features(images, train)
        losses = self._instance_losses(pyramid, images.shape, gt_boxes, gt_labels, gt_masks, gt_valid, image_hw)
        losses["total"] = sum(losses.values())
        return losses

    def _instance_losses(self, pyramid, image_shape, gt_boxes, gt_labels, gt_masks, gt_valid, image_hw) -> dict:
        """The five losses of `losses` (no "total") from the pyramid P2..P6 of images of
        `image_shape` `(N, H, W, 3)`."""
        num_images, height, width = image_shape[:3]
        extents = _extents(image_shape, image_hw)
        gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
        gt_valid = jnp.asarray(gt_valid, bool)
        keys = jax.random.split(self.make_rng("sampling"), (num_images, 2))

        objectness, deltas, anchors, proposals, proposal_valid = self._proposals(
            pyramid, (height, width), extents, True)

        def anchor_targets(boxes, valid, key):
            return rpn_targets(anchors, boxes, valid, key, batch_size=self.rpn_batch_size_per_image,
                               positive_fraction=self.rpn_positive_fraction,
                               fg_iou_threshold=self.rpn_fg_iou_threshold,
                               bg_iou_threshold=self.rpn_bg_iou_threshold)

        anchor_samples = jax.vmap(anchor_targets)(gt_boxes, gt_valid, keys[:, 0])
        objectness_sum, rpn_box_sum = jax.vmap(lambda o, d, t: rpn_losses(o, d, t, beta=self.smooth_l1_beta))(
            objectness, deltas, anchor_samples)
        normalizer = rpn_normalizer(num_images, self.rpn_batch_size_per_image)

        def sample_rois(boxes, valid, image_gt_boxes, image_gt_labels, image_gt_valid, key):
            return roi_targets(boxes, valid, image_gt_boxes, image_gt_labels, image_gt_valid, key,
                               batch_size=self.roi_batch_size_per_image,
                               positive_fraction=self.roi_positive_fraction,
                               iou_threshold=self.roi_iou_threshold)

        rois = jax.vmap(sample_rois)(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, keys[:, 1])
        self.sow("intermediates", "rpn_targets", anchor_samples)
        self.sow("intermediates", "roi_targets", rois)
        class_logits, box_deltas = self.box_head(self._pool(pyramid, rois.boxes, BOX_POOL_SIZE))
        per_image = rois.valid.shape[1]
        classification_sum, regression_sum = jax.vmap(
            lambda logits, d, t: box_head_losses(logits, d, t, beta=self.smooth_l1_beta))(
            class_logits.reshape(num_images, per_image, -1), box_deltas.reshape(num_images, per_image, -1, 4), rois)
        num_sampled = jnp.maximum(jnp.sum(rois.valid), 1).astype(jnp.float32)

        mask_sum, num_mask_pixels = self._mask_loss(pyramid, rois, gt_masks)
        return {
            "rpn_objectness": jnp.sum(objectness_sum) / normalizer,
            "rpn_box": jnp.sum(rpn_box_sum) / normalizer,
            "box_classification": jnp.sum(classification_sum) / num_sampled,
            "box_regression": jnp.sum(regression_sum) / num_sampled,
            "mask": mask_sum / jnp.maximum(num_mask_pixels, 1.0),
        }

    def _mask_loss(self, pyramid, rois, gt_masks):
        """Summed mask BCE over the foreground RoIs and the number of pixels it sums."""
        boxes, classes, targets, foreground = jax.vmap(
            lambda image_rois, masks: mask_training_targets(image_rois, masks, self.num_mask_rois, MASK_SIZE))(
            rois, gt_masks)
        logits = self.mask_head(self._pool(pyramid, boxes, MASK_POOL_SIZE))
        logits = select_class_channel(logits, classes.reshape(-1)).reshape(targets.shape)
        total = jnp.sum(jax.vmap(mask_loss_sum)(logits, targets, foreground))
        return total, jnp.sum(foreground).astype(jnp.float32) * MASK_SIZE * MASK_SIZE

    def detect(self, images, image_hw=None, *, paste: bool = True) -> dict:
        """Detections of `images [N, H, W, 3]`; see the module docstring.

        `image_hw`: None or `[N, 2]` int valid (height, width) per image; proposals and
        boxes are clipped to it. `paste` (static): return `masks [N, D, H, W]` pasted into
        the canvas, or else `mask_probabilities [N, D, M, M]` for pasting on the host.
        """
        check_images(images)
        return self._detections(self._features(images, train=False), images.shape, image_hw, paste)

    def _detections(self, pyramid, image_shape, image_hw, paste: bool) -> dict:
        """`detect`'s outputs from the pyramid P2..P6 of images of `image_shape` `(N, H, W, 3)`."""
        num_images, height, width = image_shape[:3]
        extents = _extents(image_shape, image_hw)
        *_, proposals, proposal_valid = self._proposals(pyramid, (height, width), extents, False)
        class_logits, box_deltas = self.box_head(self._pool(pyramid, proposals, BOX_POOL_SIZE))
        per_image = proposals.shape[1]

        def one_image(logits, deltas, image_proposals, valid, extent):
            return detections(logits, deltas, image_proposals, valid, extent,
                              score_threshold=self.score_threshold, nms_threshold=self.test_nms_threshold,
                              max_detections=self.detections_per_image)

        boxes, scores, classes, valid = jax.vmap(one_image)(
            class_logits.reshape(num_images, per_image, -1), box_deltas.reshape(num_images, per_image, -1, 4),
            proposals, proposal_valid, extents)
        mask_logits = self.mask_head(self._pool(pyramid, boxes, MASK_POOL_SIZE))
        probabilities = jax.nn.sigmoid(select_class_channel(mask_logits, classes.reshape(-1)))
        probabilities = probabilities.reshape(num_images, -1, *probabilities.shape[1:])
        outputs = {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid}
        if not paste:
            return {**outputs, "mask_probabilities": jnp.where(valid[:, :, None, None], probabilities, 0.0)}
        masks = jax.vmap(lambda p, b: paste_masks(p, b, height, width))(probabilities, boxes)
        return {**outputs, "masks": jnp.where(valid[:, :, None, None], masks, 0.0)}


def check_images(images) -> None:
    """ValueError unless `images` is `[N, H, W, 3]` with H and W multiples of 32, N >= 1."""
    if np.ndim(images) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [N, H, W, 3], got {images.shape}")
    if images.shape[1] % INPUT_DIVISOR or images.shape[2] % INPUT_DIVISOR or images.shape[0] < 1:
        raise ValueError(f"images height and width must be positive multiples of {INPUT_DIVISOR}, got {images.shape}")


def _extents(image_shape, image_hw) -> jax.Array:
    """Each image's valid `(height, width)` as `[N, 2]` float32 for images of `image_shape`
    `(N, H, W, 3)`; the canvas's when `image_hw` is None."""
    num_images, height, width = image_shape[:3]
    if image_hw is None:
        return jnp.broadcast_to(jnp.asarray([height, width], jnp.float32), (num_images, 2))
    if tuple(np.shape(image_hw)) != (num_images, 2):
        raise ValueError(f"image_hw must have shape [N, 2] = [{num_images}, 2] (valid height, width of each "
                         f"image), got {list(np.shape(image_hw))}")
    if not jnp.issubdtype(jnp.result_type(image_hw), jnp.integer):
        raise ValueError(f"image_hw must hold integer pixel counts, got dtype {jnp.result_type(image_hw)}")
    return jnp.asarray(image_hw).astype(jnp.float32)


def check_ground_truth(images, gt_boxes, gt_labels, gt_masks, gt_valid) -> None:
    """ValueError unless the padded ground truth fits `images` (shapes in the module docstring)."""
    check_images(images)
    num_images, height, width = images.shape[:3]
    if np.ndim(gt_boxes) != 3 or np.shape(gt_boxes)[0] != num_images or np.shape(gt_boxes)[2] != 4:
        raise ValueError(f"gt_boxes must have shape [{num_images}, G, 4], got {np.shape(gt_boxes)}")
    num_gt = np.shape(gt_boxes)[1]
    if num_gt < 1:
        raise ValueError("gt_boxes must be padded to at least one slot (G >= 1); mark padding with gt_valid")
    expected = {"gt_labels": (gt_labels, (num_images, num_gt)), "gt_valid": (gt_valid, (num_images, num_gt)),
                "gt_masks": (gt_masks, (num_images, num_gt, height, width))}
    for name, (value, shape) in expected.items():
        if tuple(np.shape(value)) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(np.shape(value))}")
