"""U-Net (Ronneberger et al., 2015) with 'SAME' padding, as a Flax Linen module."""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import schema
from jaxseg.errors import ConfigError
from jaxseg.models import factory, layers

NORMS = ("batch", "group", "none")
UPSAMPLES = ("transpose", "bilinear")


def required_divisor(features: Sequence[int]) -> int:
    """The number the input height and width must be divisible by: 2**(len(features) - 1)."""
    if len(features) == 0:
        raise ValueError("features must name at least one level, got an empty sequence")
    return 2 ** (len(features) - 1)


def _check_options(module: "UNet") -> None:
    if module.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {module.num_classes}")
    if any(f < 1 for f in module.features):
        raise ValueError(f"features must all be >= 1, got {tuple(module.features)}")
    if module.norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {module.norm!r}")
    if module.upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {UPSAMPLES}, got {module.upsample!r}")
    if not 0.0 <= module.dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {module.dropout_rate}")


def _check_input(x: jax.Array, divisor: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be [N, H, W, C] (rank 4), got shape {x.shape}")
    height, width = x.shape[1:3]
    if height % divisor or width % divisor:
        raise ValueError(
            f"image size {height}x{width} is not divisible by {divisor} "
            f"(= 2**(len(features) - 1)), which this U-Net's poolings need"
        )


class ConvNormReLU(nn.Module):
    """3x3 'SAME' conv -> norm -> ReLU: [N, H, W, C] -> [N, H, W, features].

    The conv has a bias only without BatchNorm, whose shift makes it redundant.
    Group norm uses gcd(group_norm_groups, features) groups so any width works.
    """

    features: int
    norm: str
    group_norm_groups: int
    fast_cpu_ops: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv_op = layers.row_blocked_conv if self.fast_cpu_ops else None
        x = nn.Conv(
            self.features,
            (3, 3),
            padding="SAME",
            use_bias=self.norm != "batch",
            dtype=self.dtype,
            conv_general_dilated=conv_op,
            name="conv",
        )(x)
        if self.norm == "batch":
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="norm"
            )(x)
        elif self.norm == "group":
            groups = math.gcd(self.group_norm_groups, self.features)
            x = nn.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=self.dtype, name="norm")(x)
        return nn.relu(x)


class DoubleConv(nn.Module):
    """Two ConvNormReLU: [N, H, W, C] -> [N, H, W, features]."""

    features: int
    norm: str
    group_norm_groups: int
    fast_cpu_ops: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for index in range(2):
            x = ConvNormReLU(
                self.features,
                self.norm,
                self.group_norm_groups,
                self.fast_cpu_ops,
                self.dtype,
                name=f"conv{index}",
            )(x, train)
        return x


class Upsample(nn.Module):
    """Doubles H and W and sets the channels: [N, H, W, C] -> [N, 2H, 2W, features].

    "transpose": a 2x2 stride-2 transposed conv (the paper's up-convolution);
    "bilinear": bilinear resize (half-pixel centres) then a 3x3 'SAME' conv.
    Parameters live in the child named "conv" either way.
    """

    features: int
    mode: str
    fast_cpu_ops: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.mode == "transpose":
            if self.fast_cpu_ops:
                return layers.ConvTranspose2x2(self.features, dtype=self.dtype, name="conv")(x)
            return nn.ConvTranspose(
                self.features, (2, 2), strides=(2, 2), dtype=self.dtype, name="conv"
            )(x)
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method="bilinear")
        conv_op = layers.row_blocked_conv if self.fast_cpu_ops else None
        return nn.Conv(
            self.features,
            (3, 3),
            padding="SAME",
            dtype=self.dtype,
            conv_general_dilated=conv_op,
            name="conv",
        )(x)


class UNet(nn.Module):
    """U-Net for semantic segmentation.

    Encoder: a DoubleConv per entry of `features`, with a 2x2 max-pool between
    levels (len(features) - 1 poolings). Decoder: per level, upsample to the
    next-shallower width, concatenate the encoder features of that level
    (unless `skip_connections=False`), DoubleConv. A 1x1 conv head gives the
    logits. With features=(64, 128, 256, 512, 1024), norm="none" and
    upsample="transpose" the convolutions are those of Ronneberger et al.
    (2015), padded so that the output keeps the input's size.

    Attributes:
      num_classes: output channels of the head.
      features: channels per level, shallow to deep.
      norm: "batch" (statistics in the `batch_stats` collection, running
        averages when not training), "group" or "none".
      upsample: "transpose" or "bilinear" (see `Upsample`).
      dropout_rate: dropout after the deepest DoubleConv, as in the paper;
        needs a 'dropout' rng when training with a rate > 0.
      dtype: computation dtype (params stay float32; logits are float32).
      skip_connections: False gives the decoder no encoder features (ablation).
      fast_cpu_ops: use the XLA:CPU-fast ops of `layers` (same parameters,
        outputs and gradients); keep False on GPUs and TPUs.
      group_norm_groups: groups of the group norm (gcd with the width is used).
      remat: rematerialize every encoder and decoder DoubleConv (`nn.remat`,
        i.e. `jax.checkpoint`): their activations are recomputed in the
        backward pass instead of stored, trading compute for memory (same
        parameters, outputs and gradients).
    """

    num_classes: int
    features: Sequence[int] = (64, 128, 256, 512, 1024)
    norm: str = "batch"
    upsample: str = "transpose"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    skip_connections: bool = True
    fast_cpu_ops: bool = False
    group_norm_groups: int = 32
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """[N, H, W, C] images -> [N, H, W, num_classes] float32 logits.

        H and W must be divisible by `required_divisor(features)`.
        """
        _check_options(self)
        _check_input(x, required_divisor(self.features))
        block_options = dict(
            norm=self.norm,
            group_norm_groups=self.group_norm_groups,
            fast_cpu_ops=self.fast_cpu_ops,
            dtype=self.dtype,
        )
        pool = (
            layers.max_pool_2x2
            if self.fast_cpu_ops
            else lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
        )
        # `train` (argument 2, counting the module) is a Python bool: static under remat.
        block = nn.remat(DoubleConv, static_argnums=(2,)) if self.remat else DoubleConv

        x = x.astype(self.dtype)
        skips = []
        for level, width in enumerate(self.features):
            if level > 0:
                x = pool(x)
            x = block(width, name=f"down{level}", **block_options)(x, train)
            skips.append(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

        for level in reversed(range(len(self.features) - 1)):
            width = self.features[level]
            x = Upsample(width, self.upsample, self.fast_cpu_ops, self.dtype, name=f"up{level}")(x)
            if self.skip_connections:
                x = jnp.concatenate([skips[level], x], axis=-1)
            x = block(width, name=f"decode{level}", **block_options)(x, train)

        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)
        return logits.astype(jnp.float32)


def _check_image_size(model: Any, config: Any, path: str) -> None:
    size = config.data.image_size
    divisor = required_divisor(model.features)
    if size % divisor:
        raise ConfigError(
            f"config.data.image_size={size} must be divisible by {divisor}: the U-Net "
            f"with {path}.features={tuple(model.features)} pools "
            f"{len(model.features) - 1} times by 2."
        )


UNetConfig = schema.from_module(
    UNet,
    {
        "features": schema.positive_ints,
        "norm": schema.one_of(*NORMS),
        "upsample": schema.one_of(*UPSAMPLES),
        "dropout_rate": schema.fraction("[0, 1)"),
        "dtype": schema.dtype,
        "skip_connections": schema.boolean,
        "fast_cpu_ops": schema.boolean,
        "group_norm_groups": schema.integer(1),
        "remat": schema.boolean,
    },
    exclude=("num_classes",),
    cross_check=_check_image_size,
)

build_unet = factory.register_model("unet", UNet, UNetConfig, task="semantic")
