"""DeepLabv3+ (Chen et al., 2018) for semantic segmentation, in Flax Linen.

A dilated ResNet (`resnet.ResNet` with `replace_stride_with_dilation`) gives C5
at output stride 16 (res5 dilated) or 8 (res4 and res5 dilated); ASPP on C5
(a 1x1 conv, a 3x3 atrous conv per rate, image pooling, each conv -> norm ->
ReLU, concatenated, projected by a 1x1 conv -> norm -> ReLU, dropout); the
decoder concatenates the stride-4 features (C2; C3 when the stem has no
max-pool, `stem_pool=False`) reduced to 48 channels with the ASPP output
upsampled bilinearly to their size, refines with two 3x3 convs, classifies with
a 1x1 conv and upsamples bilinearly to the input size.

Called as the U-Net: `model.init(key, images, train=False)`, then
`model.apply(variables, images, train=True, mutable=["batch_stats"],
rngs={"dropout": key})` or `model.apply(variables, images, train=False)`, with
`images [N, H, W, 3]` float32 in [0, 1] (H, W divisible by the output stride)
and logits `[N, H, W, num_classes]` float32.

The images are normalized per channel with `pixel_mean` / `pixel_std` first: the identity
by default (the recorded runs saw the [0, 1] images), ImageNet's for ImageNet weights.

`DeepLabConfig` is the schema of an experiment's `config.model` section (`name = NAME`),
built from the module's own fields and defaults plus `pretrained` (an ImageNet ResNet
file for the backbone, `jaxseg.models.pretrained_config`); `build(config)`, registered as `NAME`,
is the model of a whole experiment config.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import schema
from jaxseg.errors import ConfigError
from jaxseg.models import factory, pretrained_config
from jaxseg.models.layers import IDENTITY_MEAN, IDENTITY_STD, normalize_pixels
from jaxseg.models.norms import GROUP_NORM_GROUPS, NORM_EPSILON, make_norm
from jaxseg.models.resnet import RESNETS, ConvNorm, build_resnet

NAME = "deeplabv3plus"
OUTPUT_STRIDES = (8, 16)
NORMS = ("batch", "group")
# The output stride the ASPP rates are given for; they scale inversely with it.
RATES_OUTPUT_STRIDE = 16
# Channels of the decoder's 1x1 reduction of C2 (the paper's 48).
SKIP_CHANNELS = 48
# The stride of the decoder's low-level features.
DECODER_STRIDE = 4


def backbone_strides(stem_pool: bool) -> dict[str, int]:
    """Strides of the undilated ResNet's C2..C5: 4..32 with the stem's max-pool, 2..16 without."""
    first = 4 if stem_pool else 2
    return {f"C{level}": first * 2**index for index, level in enumerate((2, 3, 4, 5))}


def dilated_stages(output_stride: int, stem_pool: bool) -> tuple[bool, bool, bool]:
    """`replace_stride_with_dilation` of res3..res5 that puts C5 at `output_stride`.

    With the stem pool: (False, False, True) at 16, (False, True, True) at 8;
    without: (False, False, False) at 16, (False, False, True) at 8.
    """
    strides = backbone_strides(stem_pool)
    return tuple(strides[f"C{level}"] > output_stride for level in (3, 4, 5))


def decoder_level(stem_pool: bool) -> str:
    """The backbone level at `DECODER_STRIDE` the decoder fuses: "C2", or "C3" without the pool."""
    return next(level for level, stride in backbone_strides(stem_pool).items() if stride == DECODER_STRIDE)


def atrous_rates(rates: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """ASPP dilation rates at `output_stride`: `rates` are for stride 16, doubled at stride 8."""
    return tuple(rate * RATES_OUTPUT_STRIDE // output_stride for rate in rates)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize with half-pixel centres: [N, h, w, C] -> [N, height, width, C], same dtype."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="bilinear")


def pooled_group_count(channels: int) -> int:
    """Groups of the image-pooling branch's group norm on its [N, 1, 1, channels] map.

    gcd(32, channels) as elsewhere, halved where that leaves one channel per
    group (channels a power of 2 up to 32): a single value per group would
    normalize to 0 and cut the branch off.
    """
    groups = math.gcd(GROUP_NORM_GROUPS, channels)
    return groups // 2 if groups == channels > 1 else groups


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global mean -> 1x1 conv -> norm -> ReLU -> broadcast.

    [N, H, W, C] -> [N, H, W, features], constant over H and W (the bilinear
    upsampling of a 1x1 map). Norm "batch" needs more than one image per batch
    when training (with one, the normalized value is 0).
    """

    features: int
    norm: str
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        n, h, w, _ = x.shape
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        y = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="conv")(pooled)
        if self.norm == "group":
            groups = pooled_group_count(self.features)
            y = nn.GroupNorm(num_groups=groups, epsilon=NORM_EPSILON, dtype=self.dtype, name="norm")(y)
        else:
            y = make_norm(self.norm, self.features, train, self.dtype, "norm")(y)
        return jnp.broadcast_to(nn.relu(y), (n, h, w, self.features))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: [N, h, w, C] -> [N, h, w, features].

    Branches "branch0" (1x1 conv), "branch1".."branchK" (3x3 convs dilated by
    `rates`, in order), "pooling" (`ImagePooling`), each `features` wide with
    norm and ReLU; concatenated in that order ([N, h, w, (K + 2) * features]),
    then "projection" (1x1 conv, norm, ReLU) and dropout (a 'dropout' rng
    when training with a rate > 0).
    """

    features: int
    rates: Sequence[int]
    norm: str
    dropout_rate: float
    fast_cpu_ops: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        options = dict(norm=self.norm, relu=True, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        branches = [ConvNorm(self.features, 1, 1, name="branch0", **options)(x, train)]
        for index, rate in enumerate(self.rates, 1):
            conv = ConvNorm(self.features, 3, 1, dilation=rate, name=f"branch{index}", **options)
            branches.append(conv(x, train))
        branches.append(ImagePooling(self.features, self.norm, self.dtype, name="pooling")(x, train))
        y = jnp.concatenate(branches, axis=-1)
        y = ConvNorm(self.features, 1, 1, name="projection", **options)(y, train)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class Decoder(nn.Module):
    """DeepLabv3+'s decoder: ASPP output and stride-4 features -> logits at their resolution.

    `x` [N, h, w, C] is resized bilinearly to `c2`'s [H4, W4] and concatenated
    with "skip" (`c2` [N, H4, W4, C2] through a 1x1 conv to `SKIP_CHANNELS`,
    norm, ReLU); "conv0" and "conv1" (3x3, `channels`, norm, ReLU) and
    "classifier" (1x1 conv with bias) give [N, H4, W4, num_classes] in `dtype`.
    """

    num_classes: int
    channels: int
    norm: str
    fast_cpu_ops: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, c2: jax.Array, train: bool) -> jax.Array:
        options = dict(norm=self.norm, relu=True, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        skip = ConvNorm(SKIP_CHANNELS, 1, 1, name="skip", **options)(c2, train)
        y = jnp.concatenate([resize_bilinear(x, *c2.shape[1:3]), skip], axis=-1)
        for index in range(2):
            y = ConvNorm(self.channels, 3, 1, name=f"conv{index}", **options)(y, train)
        return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(y)


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a dilated ResNet backbone; see the module docstring for the API.

    Attributes:
      num_classes: output channels (background included).
      backbone: ResNet name ("resnet18", "resnet34", "resnet50", "resnet101").
      backbone_width: ResNet stem / res2 width (64 in the paper; smaller for tiny models).
      output_stride: 16 (res5 dilated by 2) or 8 (res4 by 2, res5 by 4).
      aspp_rates: the 3x3 ASPP convs' rates at output stride 16 (doubled at 8).
      aspp_channels: width of every ASPP branch and of its projection.
      decoder_channels: width of the decoder's two 3x3 convs.
      norm: "batch" (statistics in `batch_stats`, running averages when not
        training) or "group", for the backbone and the heads alike.
      dropout_rate: dropout after the ASPP projection; a 'dropout' rng when training.
      dtype: computation dtype; parameters and logits stay float32.
      fast_cpu_ops: XLA:CPU-fast formulations of the undilated convs and the
        stem pool (see `ResNet.fast_cpu_ops`); same parameters and outputs.
      input_scale: the network runs on the images resized bilinearly by this factor
        (DeepLab's evaluation scales, here in training too); the logits are resized
        back to the input's size. Small images' objects then keep their detail past
        the stem's stride 4. 1 = the images as given.
      stem_pool: the ResNet stem's stride-2 max-pool. Without it the backbone's
        levels have twice the resolution (C2 at stride 2, C3 at 4, ...), fewer
        stages are dilated for the same output stride, and the decoder fuses C3,
        the features at stride 4; same parameters except the skip's input width.
      pixel_mean, pixel_std: per-channel image normalization before the backbone
        (`layers.normalize_pixels`, [0, 1] units). The identity by default, as the
        recorded runs were trained; ImageNet files (`pretrained`) need ImageNet's
        (`layers.IMAGENET_MEAN`, `layers.IMAGENET_STD`).
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_width: int = 64
    output_stride: int = 16
    aspp_rates: Sequence[int] = (6, 12, 18)
    aspp_channels: int = 256
    decoder_channels: int = 256
    norm: str = "batch"
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    fast_cpu_ops: bool = False
    input_scale: int = 1
    stem_pool: bool = True
    pixel_mean: tuple = IDENTITY_MEAN
    pixel_std: tuple = IDENTITY_STD

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """[N, H, W, 3] float32 images in [0, 1] -> [N, H, W, num_classes] float32 logits.

        H and W times `input_scale` must be divisible by `output_stride`. The backbone's
        features ("backbone", a dict C2..C5) are seen by `capture_intermediates`.
        """
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride}")
        if self.num_classes < 1 or not self.aspp_rates:
            raise ValueError(
                f"num_classes must be >= 1 and aspp_rates non-empty, got {self.num_classes}, "
                f"{tuple(self.aspp_rates)}"
            )
        options = dict(norm=self.norm, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        backbone = build_resnet(
            self.backbone,
            num_filters=self.backbone_width,
            replace_stride_with_dilation=dilated_stages(self.output_stride, self.stem_pool),
            stem_pool=self.stem_pool,
            name="backbone",
            **options,
        )
        height, width = images.shape[1:3]
        images = normalize_pixels(images, self.pixel_mean, self.pixel_std)
        if self.input_scale != 1:
            images = resize_bilinear(images, height * self.input_scale, width * self.input_scale)
        features = backbone(images, train)
        rates = atrous_rates(self.aspp_rates, self.output_stride)
        x = ASPP(self.aspp_channels, rates, dropout_rate=self.dropout_rate, name="aspp", **options)(
            features["C5"], train
        )
        logits = Decoder(self.num_classes, self.decoder_channels, name="decoder", **options)(
            x, features[decoder_level(self.stem_pool)], train
        )
        return resize_bilinear(logits.astype(jnp.float32), height, width)


def _output_stride(value: Any, path: str) -> int:
    if isinstance(value, bool) or value not in OUTPUT_STRIDES:
        raise ConfigError(f"{path}={value!r} must be 8 or 16.")
    return value


def _check_image_size(model: Any, config: Any, path: str) -> None:
    size = config.data.image_size
    if size * model.input_scale % model.output_stride:
        scaled = f" x {path}.input_scale={model.input_scale}" if model.input_scale != 1 else ""
        raise ConfigError(
            f"config.data.image_size={size}{scaled} must be divisible by "
            f"{path}.output_stride={model.output_stride}."
        )


DeepLabConfig = pretrained_config.with_pretrained(
    schema.from_module(
        DeepLabV3Plus,
        {
            "backbone": schema.one_of(*RESNETS),
            "backbone_width": schema.integer(1),
            "output_stride": _output_stride,
            "aspp_rates": schema.positive_ints,
            "aspp_channels": schema.integer(1),
            "decoder_channels": schema.integer(1),
            "norm": schema.one_of(*NORMS),
            "dropout_rate": schema.fraction("[0, 1)"),
            "dtype": schema.dtype,
            "fast_cpu_ops": schema.boolean,
            "input_scale": schema.integer(1),
            "stem_pool": schema.boolean,
            **pretrained_config.PIXEL_RULES,
        },
        exclude=("num_classes",),
        cross_check=_check_image_size,
    ),
    pretrained_config.Backbone(submodule="backbone", norm_field="norm"),
)

build = factory.register_model(NAME, DeepLabV3Plus, DeepLabConfig, task="semantic")
