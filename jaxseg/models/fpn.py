"""Feature Pyramid Network (Lin et al., 2017) on ResNet features, in Flax Linen.

As in the paper and detectron2: a 1x1 lateral conv per input level, a
top-down path that upsamples the coarser merged map by 2 (nearest neighbour)
and adds it to the lateral, a 3x3 output conv per level, and levels above 5
by subsampling the level below with stride 2 (detectron2's
"LastLevelMaxPool": a max-pool of kernel 1, i.e. taking every other pixel).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.norms import make_norm
from jaxseg.models.resnet import FEATURE_LEVELS, pointwise_conv

NORMS = (None, "group")
# detectron2's c2_xavier_fill: kaiming_uniform_(a=1) = uniform with variance 1 / fan_in.
_CONV_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling: [N, H, W, C] -> [N, 2H, 2W, C], same dtype.

    out[n, i, j, c] = x[n, i // 2, j // 2, c], i.e. numpy's repeat by 2 along
    H and W. Written as a broadcast plus a reshape: XLA fuses it into a copy,
    and its gradient is a sum over the 2x2 blocks, where `jax.image.resize`
    would lower to gathers/scatters or a dense resampling matmul.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [N, H, W, C] (rank 4), got shape {x.shape}")
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def _check_features(features: dict[str, jax.Array], min_level: int) -> None:
    names = [f"C{level}" for level in range(min_level, FEATURE_LEVELS[-1] + 1)]
    missing = [name for name in names if name not in features]
    if missing:
        raise ValueError(f"features is missing {missing}; it must hold {names}")
    for finer, coarser in zip(names[:-1], names[1:]):
        fine, coarse = features[finer].shape, features[coarser].shape
        if len(fine) != 4 or len(coarse) != 4:
            raise ValueError(
                f"features must be [N, H, W, C] (rank 4), got {finer} {fine}, {coarser} {coarse}"
            )
        if fine[0] != coarse[0] or fine[1:3] != (2 * coarse[1], 2 * coarse[2]):
            raise ValueError(
                f"features {finer} {fine} must be twice the height and width of {coarser} {coarse}, "
                "with the same batch size"
            )


class FPN(nn.Module):
    """Feature pyramid P_min_level..P_max_level from backbone features C2..C5.

    Attributes:
      out_channels: channels of every output level (256 in the paper).
      min_level: finest level, 2..5 (C_min_level..C5 are used).
      max_level: coarsest level, >= 5; levels above 5 are stride-2
        subsamplings of the level below (P6 = P5[:, ::2, ::2]).
      norm: None (convs with bias) or "group" (bias-free convs, each followed
        by a GroupNorm with gcd(32, out_channels) groups, as detectron2's FPN
        with norm "GN").
      fast_cpu_ops: 1x1 laterals as matmuls (`resnet.pointwise_conv`), 3x3
        output convs with `layers.row_blocked_conv`: same parameters and
        outputs, faster gradients on XLA:CPU (the kernel gradient of P2's
        3x3 output conv was the slowest op of a ResNet-50-FPN training step).
        Keep False on GPU/TPU.
      dtype: computation dtype; parameters stay float32.
    """

    out_channels: int = 256
    min_level: int = 2
    max_level: int = 6
    norm: str | None = None
    fast_cpu_ops: bool = False
    dtype: Any = jnp.float32

    def _conv_norm(self, x: jax.Array, kernel_size: int, name: str) -> jax.Array:
        pad = kernel_size // 2
        conv_op = None
        if self.fast_cpu_ops:
            conv_op = pointwise_conv if kernel_size == 1 else layers.row_blocked_conv
        x = nn.Conv(
            self.out_channels,
            (kernel_size, kernel_size),
            padding=((pad, pad), (pad, pad)),
            use_bias=self.norm is None,
            dtype=self.dtype,
            kernel_init=_CONV_INIT,
            conv_general_dilated=conv_op,
            name=name,
        )(x)
        if self.norm is None:
            return x
        return make_norm(self.norm, self.out_channels, False, self.dtype, f"{name}_norm")(x)

    @nn.compact
    def __call__(self, features: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """{"C2": [N, H/4, W/4, *], ..., "C5": [N, H/32, W/32, *]} ->
        {"P<l>": [N, H/2**l, W/2**l, out_channels]} for l in min_level..max_level, in `dtype`.
        """
        if not FEATURE_LEVELS[0] <= self.min_level <= FEATURE_LEVELS[-1]:
            raise ValueError(f"min_level must be in 2..5, got {self.min_level}")
        if self.max_level < FEATURE_LEVELS[-1]:
            raise ValueError(f"max_level must be >= 5, got {self.max_level}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        _check_features(features, self.min_level)

        pyramid = {}
        merged = None
        for level in range(FEATURE_LEVELS[-1], self.min_level - 1, -1):
            lateral = self._conv_norm(features[f"C{level}"].astype(self.dtype), 1, f"lateral{level}")
            merged = lateral if merged is None else lateral + upsample_nearest_2x(merged)
            pyramid[f"P{level}"] = self._conv_norm(merged, 3, f"output{level}")
        for level in range(FEATURE_LEVELS[-1] + 1, self.max_level + 1):
            pyramid[f"P{level}"] = pyramid[f"P{level - 1}"][:, ::2, ::2]
        return {f"P{level}": pyramid[f"P{level}"] for level in range(self.min_level, self.max_level + 1)}
