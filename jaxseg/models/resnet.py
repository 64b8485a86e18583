"""ResNet (He et al., 2016) as a feature extractor for detection, in Flax Linen.

The layout is torchvision's / detectron2's "ResNet v1.5": a 7x7 stride-2 stem
conv, a 3x3 stride-2 max-pool, four stages (res2..res5) whose first block
strides by 2 (except res2), with the stride on the 3x3 conv of bottlenecks.
Optionally res3..res5 trade their stride for dilation (torchvision's
`replace_stride_with_dilation`, for DeepLab's output stride 16 or 8): the same
parameters, and features whose every other row and column (per replaced
stride) are the undilated network's at eval time.
Paddings are symmetric (k // 2 on every side, as in torchvision), not Flax's
'SAME', so weights converted from torchvision give the same outputs. The
normalization layers (and their variable names) are `models.norms`'.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxseg.models import layers
from jaxseg.models.norms import NORMS, make_norm

INPUT_DIVISOR = 32
FEATURE_LEVELS = (2, 3, 4, 5)

# name -> (blocks per stage res2..res5, bottleneck blocks?)
RESNETS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
}

# torchvision's init of ResNet convs: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def pointwise_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """A 1x1 convolution (stride s, no padding) as a strided slice and a matmul.

    Signature of `lax.conv_general_dilated` so it can be given to `nn.Conv` as
    `conv_general_dilated`; lhs [N, H, W, Cin], rhs [1, 1, Cin, Cout] ->
    [N, ceil(H / s), ceil(W / s), Cout], as the conv. On XLA:CPU its
    autodiff (matmuls) runs the conv's kernel gradient without the activation
    transposes that the convolution form needs.
    """
    unit = (1, 1)
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if (
        lhs.ndim != 4
        or rhs.ndim != 4
        or (
            dimension_numbers is not None
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc
        )
        or rhs.shape[:2] != unit
        or tuple(tuple(p) for p in padding) != ((0, 0), (0, 0))
        or tuple(lhs_dilation or unit) != unit
        or tuple(rhs_dilation or unit) != unit
        or feature_group_count != 1
    ):
        raise ValueError(
            "pointwise_conv needs NHWC/HWIO operands, a 1x1 kernel, no padding, no dilation "
            f"and no groups; got lhs {lhs.shape}, rhs {rhs.shape}, padding {padding}, "
            f"dimension_numbers {dimension_numbers}"
        )
    stride_h, stride_w = window_strides
    return jnp.einsum(
        "nhwc,co->nhwo", lhs[:, ::stride_h, ::stride_w], rhs[0, 0], precision=precision
    )


class ConvNorm(nn.Module):
    """Bias-free k x k conv (stride s, dilation d, padding d * (k // 2)) -> norm [-> ReLU].

    [N, H, W, C] -> [N, ceil(H / s), ceil(W / s), features] for even H, W.
    With `fast_cpu_ops` (same parameters and outputs, faster gradients on
    XLA:CPU), 1x1 convs are `pointwise_conv` and other undilated stride-1
    convs `layers.row_blocked_conv`.
    """

    features: int
    kernel_size: int
    stride: int
    norm: str
    relu: bool
    fast_cpu_ops: bool
    dtype: Any
    dilation: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = self.dilation * (self.kernel_size // 2)
        conv_op = None
        if self.fast_cpu_ops and self.kernel_size == 1:
            conv_op = pointwise_conv
        elif self.fast_cpu_ops and self.stride == 1 and self.dilation == 1:
            conv_op = layers.row_blocked_conv
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=(self.dilation, self.dilation),
            use_bias=False,
            dtype=self.dtype,
            kernel_init=_CONV_INIT,
            conv_general_dilated=conv_op,
            name="conv",
        )(x)
        x = make_norm(self.norm, self.features, train, self.dtype, "norm")(x)
        return nn.relu(x) if self.relu else x


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3x3 (stride) -> 3x3, plus the shortcut, then ReLU.

    [N, H, W, C] -> [N, H / stride, W / stride, features]. The shortcut is a
    1x1 strided ConvNorm when the stride or the channel count changes.
    `dilation` is conv1's; with `dilate` the block keeps the resolution
    (stride 1 everywhere) and conv2 dilates by `dilation * stride` instead.
    """

    features: int
    stride: int
    norm: str
    fast_cpu_ops: bool
    dtype: Any
    dilation: int = 1
    dilate: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        options = dict(norm=self.norm, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        stride, conv2_dilation = self.stride, self.dilation
        if self.dilate:
            stride, conv2_dilation = 1, self.dilation * self.stride
        y = ConvNorm(
            self.features, 3, stride, relu=True, dilation=self.dilation, name="conv1", **options
        )(x, train)
        y = ConvNorm(
            self.features, 3, 1, relu=False, dilation=conv2_dilation, name="conv2", **options
        )(y, train)
        shortcut = _shortcut(x, self.features, stride, options, train)
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    """ResNet-50/101 block: 1x1 -> 3x3 (stride) -> 1x1 (4x wider), shortcut, ReLU.

    [N, H, W, C] -> [N, H / stride, W / stride, 4 * features]; the stride is on
    the 3x3 conv (v1.5), whose dilation is `dilation`. The shortcut is a 1x1
    strided ConvNorm when the stride or the channel count changes. With
    `dilate` the block keeps the resolution (stride 1 everywhere).
    """

    features: int
    stride: int
    norm: str
    fast_cpu_ops: bool
    dtype: Any
    dilation: int = 1
    dilate: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        options = dict(norm=self.norm, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        out_features = self.features * self.expansion
        stride = 1 if self.dilate else self.stride
        y = ConvNorm(self.features, 1, 1, relu=True, name="conv1", **options)(x, train)
        y = ConvNorm(
            self.features, 3, stride, relu=True, dilation=self.dilation, name="conv2", **options
        )(y, train)
        y = ConvNorm(out_features, 1, 1, relu=False, name="conv3", **options)(y, train)
        shortcut = _shortcut(x, out_features, stride, options, train)
        return nn.relu(y + shortcut)


def _shortcut(x: jax.Array, features: int, stride: int, options: dict, train: bool) -> jax.Array:
    """Identity, or a 1x1 strided projection (child "shortcut") when shapes change."""
    if stride == 1 and x.shape[-1] == features:
        return x
    return ConvNorm(features, 1, stride, relu=False, name="shortcut", **options)(x, train)


def max_pool_3x3_stride2(x: jax.Array, fast_cpu_ops: bool = False) -> jax.Array:
    """The stem's 3x3 stride-2 max-pool, padding 1: [N, H, W, C] -> [N, H/2, W/2, C] (even H, W).

    Padding counts as -inf (never the maximum), as in torchvision. With
    `fast_cpu_ops` it is the elementwise maximum of the 9 strided slices of
    the padded input: the same output, and a gradient without XLA:CPU's slow
    select-and-scatter (about 5x faster at 256x256x64). Tie rule of that
    gradient: tied maxima of a window share its gradient (the chained maxima
    split it in halves) instead of the first one taking it all; both are
    valid subgradients, and ties are practically only the zeros left by the
    ReLU before the pool, whose gradient the ReLU discards anyway.
    """
    if not fast_cpu_ops:
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    n, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    pooled = None
    for row in range(3):
        for col in range(3):
            window = lax.slice(padded, (0, row, col, 0), (n, row + h - 1, col + w - 1, c), (1, 2, 2, 1))
            pooled = window if pooled is None else jnp.maximum(pooled, window)
    return pooled


def _check_input(x: jax.Array, divisor: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C] (rank 4), got shape {x.shape}")
    height, width = x.shape[1:3]
    if height == 0 or width == 0 or height % divisor or width % divisor:
        raise ValueError(
            f"image size {height}x{width} must be positive and divisible by "
            f"{divisor} (the stride of C5)"
        )


def _check_options(module: "ResNet") -> None:
    if module.norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {module.norm!r}")
    if len(module.stage_sizes) != len(FEATURE_LEVELS) or any(n < 1 for n in module.stage_sizes):
        raise ValueError(f"stage_sizes must be 4 positive block counts, got {tuple(module.stage_sizes)}")
    if module.num_filters < 1:
        raise ValueError(f"num_filters must be >= 1, got {module.num_filters}")
    if not 0 <= module.freeze_at <= 5:
        raise ValueError(f"freeze_at must be in 0..5, got {module.freeze_at}")
    dilated = tuple(module.replace_stride_with_dilation)
    if len(dilated) != len(FEATURE_LEVELS) - 1 or any(not isinstance(d, bool) for d in dilated):
        raise ValueError(f"replace_stride_with_dilation must be 3 bools (res3..res5), got {dilated}")


class ResNet(nn.Module):
    """ResNet backbone returning the outputs of stages res2..res5.

    Attributes:
      stage_sizes: blocks per stage res2..res5, e.g. (3, 4, 6, 3).
      bottleneck: Bottleneck blocks (ResNet-50/101) instead of BasicBlocks.
      num_filters: width of the stem and of res2's (inner) convs; doubled per stage.
      norm: "frozen_batch", "batch" or "group" (see `norms.make_norm`, `norms.FrozenBatchNorm`).
      freeze_at: 0 trains everything; 1 freezes the stem; k in 2..5 also
        stages res2..res_k (detectron2's FREEZE_AT). Frozen parts get no
        gradient (`lax.stop_gradient` on their output, which also skips
        their backward pass), and the optimizer neither updates nor decays
        them (`frozen_children`, read by `training.param_groups`).
      fast_cpu_ops: XLA:CPU-fast formulations with the same parameters and
        outputs: 1x1 convs as matmuls (`pointwise_conv`), other stride-1
        convs with `layers.row_blocked_conv`, the stem
        max-pool as slices (see `max_pool_3x3_stride2`). Keep False on GPU/TPU.
      remat: rematerialize every residual block (`nn.remat`, i.e. `jax.checkpoint`):
        only block inputs are kept for the backward pass, the rest is recomputed
        (less memory, about one more forward pass of compute).
      dtype: computation dtype; parameters stay float32.
      replace_stride_with_dilation: 3 bools for res3..res5 (torchvision's
        option): a True stage keeps its input's resolution, its first block
        at stride 1 and every later 3x3 conv dilated by the stride it gave
        up (times earlier stages'): (False, False, True) gives C5 at stride
        16, (False, True, True) C4 and C5 at stride 8. Parameters are the same.
      stem_pool: the stem's 3x3 stride-2 max-pool. Without it (False) every
        level keeps twice the resolution (C2 at stride 2 ... C5 at 16, halved
        again per dilated stage) for about 4x the compute of res2..res4, and
        the same parameters.
    """

    stage_sizes: Sequence[int]
    bottleneck: bool
    num_filters: int = 64
    norm: str = "frozen_batch"
    freeze_at: int = 0
    fast_cpu_ops: bool = False
    remat: bool = False
    dtype: Any = jnp.float32
    replace_stride_with_dilation: Sequence[bool] = (False, False, False)
    stem_pool: bool = True

    @property
    def out_channels(self) -> dict[str, int]:
        """Channels of C2..C5, e.g. {"C2": 256, ..., "C5": 2048} for ResNet-50."""
        expansion = 4 if self.bottleneck else 1
        return {
            f"C{level}": self.num_filters * 2**index * expansion
            for index, level in enumerate(FEATURE_LEVELS)
        }

    def frozen_children(self) -> tuple[str, ...]:
        """Names of the submodules `freeze_at` freezes: "stem", then every block of
        res2..res_k ("res2_0", ...)."""
        if self.freeze_at < 1:
            return ()
        blocks = tuple(
            f"res{level}_{block}"
            for level, num_blocks in zip(FEATURE_LEVELS, self.stage_sizes)
            if level <= self.freeze_at
            for block in range(num_blocks)
        )
        return ("stem",) + blocks

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        """[N, H, W, C] images -> {"C2": [N, H/4, W/4, C2], ..., "C5": [N, H/32, W/32, C5]}.

        H and W must be divisible by 32, the stride of C5 (16 or 8 with
        `replace_stride_with_dilation`, which also sets the strides of C3..C5;
        every stride is halved without `stem_pool`).
        Features are in `dtype`; channel counts are `out_channels` (64..512 for
        ResNet-18/34, 256..2048 for ResNet-50/101 with num_filters=64).
        """
        _check_options(self)
        halvings = sum(self.replace_stride_with_dilation) + (not self.stem_pool)
        _check_input(x, INPUT_DIVISOR // 2**halvings)
        options = dict(norm=self.norm, fast_cpu_ops=self.fast_cpu_ops, dtype=self.dtype)
        block_cls = Bottleneck if self.bottleneck else BasicBlock
        if self.remat:
            # `train` (argument 2, counting the module) is a Python bool: static under remat.
            block_cls = nn.remat(block_cls, static_argnums=(2,))

        x = x.astype(self.dtype)
        x = ConvNorm(self.num_filters, 7, 2, relu=True, name="stem", **options)(x, train)
        if self.stem_pool:
            x = max_pool_3x3_stride2(x, self.fast_cpu_ops)
        if self.freeze_at >= 1:
            x = lax.stop_gradient(x)

        features = {}
        dilation = 1
        for index, (level, num_blocks) in enumerate(zip(FEATURE_LEVELS, self.stage_sizes)):
            dilate = index > 0 and self.replace_stride_with_dilation[index - 1]
            for block in range(num_blocks):
                stride = 2 if block == 0 and index > 0 else 1
                x = block_cls(
                    self.num_filters * 2**index,
                    stride,
                    dilation=dilation,
                    dilate=dilate,
                    name=f"res{level}_{block}",
                    **options,
                )(x, train)
                if dilate:
                    dilation *= stride
            if self.freeze_at >= level:
                x = lax.stop_gradient(x)
            features[f"C{level}"] = x
        return features


def build_resnet(resnet_name: str, **options: Any) -> ResNet:
    """ResNet by name ("resnet18", "resnet34", "resnet50", "resnet101").

    `options` (including the Flax module `name`) go to `ResNet`.
    """
    if resnet_name not in RESNETS:
        raise ValueError(f"resnet_name must be one of {sorted(RESNETS)}, got {resnet_name!r}")
    stage_sizes, bottleneck = RESNETS[resnet_name]
    return ResNet(stage_sizes=stage_sizes, bottleneck=bottleneck, **options)
