"""Segmentation losses: cross-entropy, focal and Dice, and their weighted sums.

Every loss takes logits of any float dtype, computes in float32 and returns a float32
scalar; all are `jax.jit`-able and their gradients stay finite for masks that are all
background, all foreground or entirely ignored.

Multi-class losses take logits `[..., K]` (normally `[N, H, W, K]`) and integer labels
`[...]` (normally `[N, H, W]`). A pixel whose label is `ignore_label` or lies outside
`[0, K)` is ignored: it adds nothing to the loss nor to the count it is averaged over.
"""
from jaxseg.losses.functions import (
    dice_loss,
    focal_loss,
    multiclass_dice_loss,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    softmax_cross_entropy,
)
from jaxseg.losses.weighted import LossConfig, make_loss_fn, parse_loss_spec

__all__ = [
    "LossConfig",
    "dice_loss",
    "focal_loss",
    "make_loss_fn",
    "multiclass_dice_loss",
    "parse_loss_spec",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
]
