"""Panoptic FPN (Kirillov et al., 2019): Mask R-CNN plus a semantic FPN head on its pyramid.

The semantic head is detectron2's `SemSegFPNHead`: each level P2..P5 goes through
max(1, l - 2) stages of [3x3 conv (`semantic_channels`, bias-free under GroupNorm), GroupNorm,
ReLU, then a 2x bilinear upsample while the map is coarser than stride 4]; the four stride-4
maps are summed, a 1x1 conv gives `num_stuff_classes` logits (class 0 stands for every
thing pixel, the others are the stuff classes) and a 4x bilinear upsample brings them to
the image. Its loss is the mean cross-entropy over the pixels whose label is not
`ignore_label`.

* `apply(variables, images, gt_boxes, gt_labels, gt_masks, gt_valid, gt_semantic, train=True,
  image_hw=None, method=PanopticFPN.losses, rngs={"sampling": key})` -> float32 scalars:
  Mask R-CNN's five losses, `semantic` (unweighted), and `total` = the five +
  `semantic_loss_weight` x `semantic`. `gt_semantic` is `[N, H, W]` int.
* `apply(variables, images, image_hw=None, paste=True, method=PanopticFPN.detect)` ->
  `MaskRCNN.detect`'s outputs plus `semantic [N, H, W]` int32, the arg-max class.

Fusion into a panoptic map runs on the host (`jaxseg.ops.panoptic_fusion`), with this
module's `instance_score_threshold`, `overlap_threshold` and `stuff_area_limit`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import losses as loss_functions
from jaxseg.models import layers
from jaxseg.models.mask_rcnn import ROI_LEVELS, MaskRCNN, check_ground_truth, check_images
from jaxseg.models.norms import make_norm

COMMON_STRIDE_LEVEL = 2  # the head's maps meet at P2's stride, 4
# detectron2's c2_msra_fill, its init of the head's convs: He normal over fan_out.
_MSRA_FILL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
    """[N, H, W, C] -> [N, factor·H, factor·W, C] bilinear, half-pixel centres (PyTorch's
    `interpolate(mode="bilinear", align_corners=False)`), same dtype."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, factor * h, factor * w, c), "bilinear").astype(x.dtype)


class SemanticFPNHead(nn.Module):
    """Per-pixel logits `[N, 4·H2, 4·W2, num_classes]` float32 of the pyramid levels P2..P5
    (`[N, H2, W2, C]` .. `[N, H2/8, W2/8, C]`); see the module docstring.

    Attributes:
      num_classes: output classes (the thing class and the stuff classes).
      channels: width of the stages (128).
      norm: None (convs with bias) or "group" (detectron2's "GN").
      fast_cpu_ops: 3x3 convs with `layers.row_blocked_conv` (faster gradients on XLA:CPU).
      dtype: computation dtype; parameters and logits stay float32.
    """

    num_classes: int
    channels: int = 128
    norm: str | None = "group"
    fast_cpu_ops: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pyramid: list[jax.Array]) -> jax.Array:
        summed = None
        for level, features in zip(ROI_LEVELS, pyramid):
            x = features
            for stage in range(max(1, level - COMMON_STRIDE_LEVEL)):
                name = f"p{level}_stage{stage}"
                x = nn.Conv(
                    self.channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=self.norm is None,
                    dtype=self.dtype, kernel_init=_MSRA_FILL, name=name,
                    conv_general_dilated=layers.row_blocked_conv if self.fast_cpu_ops else None,
                )(x)
                if self.norm is not None:
                    x = make_norm(self.norm, self.channels, False, self.dtype, f"{name}_norm")(x)
                x = nn.relu(x)
                if level > COMMON_STRIDE_LEVEL:
                    x = upsample_bilinear(x, 2)
            summed = x if summed is None else summed + x
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, kernel_init=_MSRA_FILL, name="predictor")(summed)
        return upsample_bilinear(logits.astype(jnp.float32), 2**COMMON_STRIDE_LEVEL)


class PanopticFPN(MaskRCNN):
    """Mask R-CNN with a semantic FPN head; see the module docstring for the API.

    Attributes (besides `MaskRCNN`'s):
      num_stuff_classes: the semantic head's classes, the thing class included (1 + stuff).
      semantic_channels, semantic_norm: see `SemanticFPNHead` (128, "group").
      semantic_loss_weight: the semantic loss's weight in `total` (0.5).
      ignore_label: semantic label left out of the loss (255).
      instance_score_threshold: fusion pastes instances of at least this score (0.5).
      overlap_threshold: fusion skips an instance whose pixels are more than this fraction
        already taken (0.5).
      stuff_area_limit: fusion drops stuff segments of fewer pixels (4096 at COCO's ~800 x
        1333 images; scale it with the image area).
    """

    num_stuff_classes: int = 54
    semantic_channels: int = 128
    semantic_norm: str | None = "group"
    semantic_loss_weight: float = 0.5
    ignore_label: int = 255
    instance_score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    stuff_area_limit: int = 4096

    def setup(self):
        super().setup()
        if self.num_stuff_classes < 2:
            raise ValueError(f"num_stuff_classes must count the thing class and at least one stuff class, "
                             f"got {self.num_stuff_classes}")
        self.semantic_head = SemanticFPNHead(self.num_stuff_classes, self.semantic_channels, self.semantic_norm,
                                             self.fast_cpu_ops, self.dtype)

    def _semantic_logits(self, pyramid) -> jax.Array:
        return self.semantic_head(pyramid[:len(ROI_LEVELS)])

    def losses(self, images, gt_boxes, gt_labels, gt_masks, gt_valid, gt_semantic, *, train: bool = True,
               image_hw=None) -> dict:
        """Training losses (see the module docstring); needs the `'sampling'` rng."""
        check_ground_truth(images, gt_boxes, gt_labels, gt_masks, gt_valid)
        if tuple(gt_semantic.shape) != tuple(images.shape[:3]):
            raise ValueError(f"gt_semantic must have shape {list(images.shape[:3])}, got {list(gt_semantic.shape)}")
        pyramid = self._features(images, train)
        losses = self._instance_losses(pyramid, images.shape, gt_boxes, gt_labels, gt_masks, gt_valid, image_hw)
        total = sum(losses.values())
        losses["semantic"] = loss_functions.softmax_cross_entropy(
            self._semantic_logits(pyramid), gt_semantic, ignore_label=self.ignore_label)
        losses["total"] = total + self.semantic_loss_weight * losses["semantic"]
        return losses

    def detect(self, images, image_hw=None, *, paste: bool = True) -> dict:
        """`MaskRCNN.detect`'s outputs and `semantic [N, H, W]` int32 (see the module docstring)."""
        check_images(images)
        pyramid = self._features(images, train=False)
        outputs = self._detections(pyramid, images.shape, image_hw, paste)
        outputs["semantic"] = jnp.argmax(self._semantic_logits(pyramid), axis=-1).astype(jnp.int32)
        return outputs
