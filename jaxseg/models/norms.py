"""The normalization layers of the ResNet family, over the last (channel) axis.

Parameter and variable names follow `flax.linen.BatchNorm` ('scale', 'bias' in
`params`, 'mean', 'var' in `batch_stats`) for every BatchNorm kind, so a
checkpoint trained with norm="batch" loads into norm="frozen_batch" and back.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NORMS = ("frozen_batch", "batch", "group")
GROUP_NORM_GROUPS = 32
NORM_EPSILON = 1e-5


class FrozenBatchNorm(nn.Module):
    """BatchNorm that always normalizes with its stored statistics.

    y = (x - mean) / sqrt(var + epsilon) * scale + bias, per channel, whether
    training or not: a fixed affine transform, as detectron2's
    FrozenBatchNorm2d, for detection's small per-device batches whose batch
    statistics would be too noisy. 'mean' and 'var' live in `batch_stats`
    and are never updated (applying with mutable=["batch_stats"] returns them
    unchanged). 'scale' and 'bias' live in `params` (where pretrained weights
    put them) and, as in detectron2, stay fixed: the training optimizer
    labels them frozen (`training.param_groups`). With fresh (identity)
    statistics the layer is the identity: without converted pretrained
    weights, use norm="group" or "batch".

    Input [..., C], output [..., C] in `dtype` (or the promoted input dtype).
    """

    epsilon: float = NORM_EPSILON
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (channels,), self.param_dtype)
        mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((channels,), self.param_dtype)
        ).value
        var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((channels,), self.param_dtype)
        ).value
        multiplier = scale * lax.rsqrt(var + self.epsilon)
        shift = bias - mean * multiplier
        x, multiplier, shift = nn.dtypes.promote_dtype(x, multiplier, shift, dtype=self.dtype)
        return x * multiplier + shift


def make_norm(kind: str, channels: int, train: bool, dtype: Any, name: str) -> nn.Module:
    """A normalization layer over the last (channel) axis, by `kind` (see NORMS).

    "batch": `nn.BatchNorm` (batch statistics when training, running averages
    with momentum 0.9 otherwise); "frozen_batch": `FrozenBatchNorm`; "group":
    `nn.GroupNorm` with gcd(32, channels) groups (32 for the
    standard widths; fewer for narrow test models instead of an error).
    Call it inside a compact method: the layer becomes a child named `name`.
    """
    if kind == "batch":
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=NORM_EPSILON,
            dtype=dtype,
            name=name,
        )
    if kind == "frozen_batch":
        return FrozenBatchNorm(dtype=dtype, name=name)
    if kind == "group":
        groups = math.gcd(GROUP_NORM_GROUPS, channels)
        return nn.GroupNorm(num_groups=groups, epsilon=NORM_EPSILON, dtype=dtype, name=name)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
