"""ResNet + FPN backbone for detection: images -> feature pyramid."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.fpn import FPN
from jaxseg.models.resnet import build_resnet


class ResNetFPN(nn.Module):
    """A ResNet chosen by name followed by an FPN.

    Attributes:
      resnet_name: a key of `resnet.RESNETS`, e.g. "resnet50".
      norm: the ResNet's norm ("frozen_batch", "batch" or "group").
      fpn_channels: channels of every pyramid level.
      fpn_norm: the FPN's norm (None or "group").
      min_level, max_level: pyramid levels returned (see `FPN`).
      freeze_at: see `ResNet.freeze_at`.
      fast_cpu_ops: see `ResNet.fast_cpu_ops` and `FPN.fast_cpu_ops`.
      dtype: computation dtype; parameters stay float32.
    """

    resnet_name: str = "resnet50"
    norm: str = "frozen_batch"
    fpn_channels: int = 256
    fpn_norm: str | None = None
    min_level: int = 2
    max_level: int = 6
    freeze_at: int = 0
    fast_cpu_ops: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """[N, H, W, C] images (H, W divisible by 32) -> feature pyramid.

        Returns {"P<l>": [N, ceil(H / 2**l), ceil(W / 2**l), fpn_channels]}
        for l in min_level..max_level, in `dtype`.
        """
        resnet = build_resnet(
            self.resnet_name,
            norm=self.norm,
            freeze_at=self.freeze_at,
            fast_cpu_ops=self.fast_cpu_ops,
            dtype=self.dtype,
            name="resnet",
        )
        fpn = FPN(
            self.fpn_channels,
            self.min_level,
            self.max_level,
            self.fpn_norm,
            self.fast_cpu_ops,
            self.dtype,
            name="fpn",
        )
        return fpn(resnet(images, train))
