"""A U-Net whose encoder is a ResNet (as segmentation_models' "Unet"), in Flax Linen.

Encoder: the project's ResNet (`resnet.build_resnet`, submodule "backbone"), whose C2..C5
(strides 4, 8, 16, 32) are the skips. Decoder: `len(DECODER_STRIDES)` = 5 blocks from
C5 up, each a 2x bilinear upsample (half-pixel centres), the concatenation of the
backbone level at the new stride (C4, C3, C2 at strides 16, 8, 4; none at 2 and 1: the
stem's stride-2 output is not a feature of the ResNet), then two 3x3 conv -> norm ->
ReLU; a 1x1 conv with bias gives the logits at full resolution. Bilinear upsampling adds
no parameter and, unlike a stride-2 transposed conv, no checkerboard pattern; the two
skip-less blocks refine the stride-4 decoder output at strides 2 and 1 instead of a 4x
resize of the logits.

Called as the U-Net: `model.init(key, images, train=False)`, then
`model.apply(variables, images, train=True, mutable=["batch_stats"])` or
`model.apply(variables, images, train=False)`, with `images [N, H, W, 3]` float32 in
[0, 1] (H, W divisible by 32) and logits `[N, H, W, num_classes]` float32. The images are
normalized with `pixel_mean` / `pixel_std` (ImageNet's by default) before the backbone.

`ResNetUNetConfig` is the schema of an experiment's `config.model` section
(`name = NAME`): the module's fields and defaults plus `pretrained` (an ImageNet ResNet
file for the backbone, `jaxseg.models.pretrained_config`); `build(config)` is registered
as `NAME` for the semantic task.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import schema
from jaxseg.errors import ConfigError
from jaxseg.models import factory, pretrained_config
from jaxseg.models.deeplab import resize_bilinear
from jaxseg.models.layers import IMAGENET_MEAN, IMAGENET_STD, normalize_pixels
from jaxseg.models.norms import NORMS
from jaxseg.models.resnet import INPUT_DIVISOR, RESNETS, ConvNorm, build_resnet

NAME = "resnet_unet"
DECODER_NORMS = ("batch", "group")
# The stride each decoder block outputs, and the backbone level concatenated there.
DECODER_STRIDES = (16, 8, 4, 2, 1)
SKIPS = {16: "C4", 8: "C3", 4: "C2"}


class DecoderBlock(nn.Module):
    """2x bilinear upsample, [concatenate the skip], two 3x3 ConvNorm with ReLU.

    `x` [N, h, w, C] and `skip` [N, 2h, 2w, S] or None -> [N, 2h, 2w, features] in
    `dtype`; the convs are the children "conv0" and "conv1".
    """

    features: int
    norm: str
    fast_cpu_ops: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array | None, train: bool) -> jax.Array:
        x = resize_bilinear(x, 2 * x.shape[1], 2 * x.shape[2])
        if skip is not None:
            x = jnp.concatenate([x, skip], axis=-1)
        options = dict(norm=self.norm, relu=True, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        for index in range(2):
            x = ConvNorm(self.features, 3, 1, name=f"conv{index}", **options)(x, train)
        return x


def _check_options(module: "ResNetUNet") -> None:
    if module.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {module.num_classes}")
    if len(module.decoder_channels) != len(DECODER_STRIDES) or min(module.decoder_channels) < 1:
        raise ValueError(
            f"decoder_channels must be {len(DECODER_STRIDES)} positive widths (strides "
            f"{DECODER_STRIDES}), got {tuple(module.decoder_channels)}"
        )
    if module.decoder_norm not in DECODER_NORMS:
        raise ValueError(f"decoder_norm must be one of {DECODER_NORMS}, got {module.decoder_norm!r}")


class ResNetUNet(nn.Module):
    """U-Net with a ResNet encoder; see the module docstring for the API.

    Attributes:
      num_classes: output channels (background included).
      backbone: ResNet name ("resnet18", "resnet34", "resnet50", "resnet101").
      backbone_width: ResNet stem / res2 width (64 for ImageNet files; smaller for tiny models).
      backbone_norm: the ResNet's norm: "batch" (statistics in `batch_stats`, running
        averages when not training), "frozen_batch" (fixed statistics, for ImageNet
        files) or "group".
      freeze_at: see `ResNet.freeze_at` (0 trains the whole backbone).
      decoder_channels: widths of the 5 decoder blocks, at strides 16, 8, 4, 2, 1.
      decoder_norm: the decoder's norm, "batch" or "group".
      pixel_mean, pixel_std: per-channel image normalization before the backbone
        (`layers.normalize_pixels`, [0, 1] units); ImageNet's by default.
      dtype: computation dtype; parameters and logits stay float32.
      fast_cpu_ops: XLA:CPU-fast formulations of the undilated convs and the stem pool
        (see `ResNet.fast_cpu_ops`); same parameters and outputs. False on GPU/TPU.
    """

    num_classes: int
    backbone: str = "resnet34"
    backbone_width: int = 64
    backbone_norm: str = "batch"
    freeze_at: int = 0
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)
    decoder_norm: str = "batch"
    pixel_mean: tuple = IMAGENET_MEAN
    pixel_std: tuple = IMAGENET_STD
    dtype: Any = jnp.float32
    fast_cpu_ops: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """[N, H, W, 3] float32 images in [0, 1] -> [N, H, W, num_classes] float32 logits.

        H and W must be divisible by 32. The backbone's features ("backbone", a dict
        C2..C5) are seen by `capture_intermediates`.
        """
        _check_options(self)
        backbone = build_resnet(
            self.backbone,
            num_filters=self.backbone_width,
            norm=self.backbone_norm,
            freeze_at=self.freeze_at,
            fast_cpu_ops=self.fast_cpu_ops,
            dtype=self.dtype,
            name="backbone",
        )
        features = backbone(normalize_pixels(images, self.pixel_mean, self.pixel_std), train)
        x = features["C5"]
        for index, (stride, width) in enumerate(zip(DECODER_STRIDES, self.decoder_channels)):
            skip = features[SKIPS[stride]] if stride in SKIPS else None
            block = DecoderBlock(
                width, self.decoder_norm, self.fast_cpu_ops, self.dtype, name=f"decoder{index}"
            )
            x = block(x, skip, train)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)
        return logits.astype(jnp.float32)


def _decoder_channels(value: Any, path: str) -> tuple[int, ...]:
    widths = schema.positive_ints(value, path)
    if len(widths) != len(DECODER_STRIDES):
        raise ConfigError(
            f"{path}={value!r} must give {len(DECODER_STRIDES)} widths, one per decoder block "
            f"(strides {', '.join(map(str, DECODER_STRIDES))})."
        )
    return widths


def _check_image_size(model: Any, config: Any, path: str) -> None:
    size = config.data.image_size
    if size % INPUT_DIVISOR:
        raise ConfigError(
            f"config.data.image_size={size} must be divisible by {INPUT_DIVISOR}, the stride "
            f"of the ResNet encoder's C5 ({path}.backbone={model.backbone!r})."
        )


ResNetUNetConfig = pretrained_config.with_pretrained(
    schema.from_module(
        ResNetUNet,
        {
            "backbone": schema.one_of(*RESNETS),
            "backbone_width": schema.integer(1),
            "backbone_norm": schema.one_of(*NORMS),
            "freeze_at": schema.one_of(*range(6)),
            "decoder_channels": _decoder_channels,
            "decoder_norm": schema.one_of(*DECODER_NORMS),
            "dtype": schema.dtype,
            "fast_cpu_ops": schema.boolean,
            **pretrained_config.PIXEL_RULES,
        },
        exclude=("num_classes",),
        cross_check=_check_image_size,
    ),
    pretrained_config.Backbone(submodule="backbone", norm_field="backbone_norm"),
)

build = factory.register_model(NAME, ResNetUNet, ResNetUNetConfig, task="semantic")
