"""Building blocks for convolutional networks (NHWC): input normalization and CPU-fast ops.

`normalize_pixels` standardizes images per channel, with ImageNet's statistics
(`IMAGENET_MEAN`, `IMAGENET_STD`) for backbones trained on ImageNet.

XLA:CPU differentiates a few standard ops slowly (see
`shared/notes/xla-cpu-conv-speed.md`): the kernel gradient of a stride-2
transposed convolution, the select-and-scatter gradient of a max-pool, and the
kernel gradient of a 3x3 convolution once its output-gradient no longer fits in
cache. Each function here computes exactly the same thing as the plain op, with
a formulation that XLA:CPU runs fast. They are meant for CPUs only; on GPUs and
TPUs the plain Flax ops are the right choice.
"""
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_NHWC_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
_ROW_BLOCK_BYTES = 1024 * 1024
# ImageNet's per-channel RGB mean and standard deviation, in [0, 1] units (torchvision's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The normalization that leaves images as they are.
IDENTITY_MEAN = (0.0, 0.0, 0.0)
IDENTITY_STD = (1.0, 1.0, 1.0)


def normalize_pixels(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """(images - mean) / std per channel: [N, H, W, 3] float32 -> [N, H, W, 3] float32.

    `mean` and `std` are 3 numbers each, in the images' units ([0, 1] for the data
    pipeline's images); mean (0, 0, 0) and std (1, 1, 1) return the images unchanged.
    """
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _check_nhwc(name: str, x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [N, H, W, C] (rank 4), got shape {x.shape}")


def _window_view(x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, H/2, 2, W/2, 2, C]: the 2x2 windows of a 2x2 pool."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


def _first_maximum_mask(x: jax.Array, pooled: jax.Array) -> jax.Array:
    """Boolean [N, H, W, C]: True at the first maximum of every 2x2 window.

    "First" is in row-major window order: (0, 0), (0, 1), (1, 0), (1, 1).
    """
    windows = _window_view(x)
    is_max = windows == pooled[:, :, None, :, None, :]
    no = jnp.zeros_like(is_max[:, :, :, :, :1, :])
    earlier_in_row = jnp.concatenate([no, is_max[:, :, :, :, :1, :]], axis=4)
    first_row_has_max = jnp.any(is_max[:, :, :1, :, :, :], axis=4, keepdims=True)
    earlier_row = jnp.concatenate(
        [jnp.zeros_like(first_row_has_max), first_row_has_max], axis=2
    )
    first = is_max & ~earlier_in_row & ~earlier_row
    return first.reshape(x.shape)


def _window_max(x: jax.Array) -> jax.Array:
    return jnp.max(_window_view(x), axis=(2, 4))


@jax.custom_vjp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
    return _window_max(x)


def _max_pool_2x2_fwd(x):
    pooled = _window_max(x)
    return pooled, (x, pooled)


def _max_pool_2x2_bwd(residuals, grad_pooled):
    x, pooled = residuals
    mask = _first_maximum_mask(x, pooled)
    n, h, w, c = x.shape
    spread = jnp.broadcast_to(
        grad_pooled[:, :, None, :, None, :], (n, h // 2, 2, w // 2, 2, c)
    ).reshape(x.shape)
    return (jnp.where(mask, spread, jnp.zeros_like(spread)),)


_max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2: [N, H, W, C] -> [N, H/2, W/2, C], same dtype.

    Equals `flax.linen.max_pool(x, (2, 2), strides=(2, 2))`, forward and
    gradient. Tie rule of the gradient (the same as that of `nn.max_pool`'s
    autodiff): the whole output gradient of a window goes to the FIRST maximum
    in row-major window order (top-left, top-right, bottom-left, bottom-right);
    the other elements of the window get zero. H and W must be even.
    """
    _check_nhwc("x", x)
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"x height and width must be even, got shape {x.shape}")
    return _max_pool_2x2(x)


def upsample_2x2(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Transposed conv, kernel 2x2, stride 2, as one matmul plus a reshape.

    Args:
      x: [N, H, W, Cin].
      kernel: [2, 2, Cin, Cout], laid out as the kernel of
        `flax.linen.ConvTranspose(Cout, (2, 2), strides=(2, 2))`.

    Returns:
      [N, 2H, 2W, Cout] in the promoted dtype of `x` and `kernel`: output pixel
      (2i + a, 2j + b) is x[i, j] @ kernel[1 - a, 1 - b] (flax's
      `conv_transpose` does not flip the kernel, so the einsum must).
    """
    _check_nhwc("x", x)
    if kernel.shape[:2] != (2, 2) or kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"kernel must be [2, 2, {x.shape[3]}, Cout], got shape {kernel.shape}"
        )
    n, h, w, _ = x.shape
    flipped = kernel[::-1, ::-1]
    blocks = jnp.einsum("nijc,abco->niajbo", x, flipped)
    return blocks.reshape(n, 2 * h, 2 * w, kernel.shape[3])


class ConvTranspose2x2(nn.Module):
    """Drop-in for `nn.ConvTranspose(features, (2, 2), strides=(2, 2))`.

    Same parameters ('kernel' [2, 2, Cin, features], 'bias' [features]), same
    initialisers and the same output, so checkpoints are interchangeable.
    Input [N, H, W, Cin], output [N, 2H, 2W, features] in `dtype`.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (2, 2, x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = upsample_2x2(x, kernel)
        return y if bias is None else y + bias


def _rows_per_block(grad_shape: Sequence[int], itemsize: int) -> int:
    """Rows of the output gradient per block so that one block fits the budget."""
    n, _, w, c = grad_shape
    return max(1, _ROW_BLOCK_BYTES // (n * w * c * itemsize))


def _conv_same(x, kernel, pads):
    return lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=_NHWC_DIMENSIONS
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _row_blocked_conv(x, kernel, pads):
    return _conv_same(x, kernel, pads)


def _row_blocked_conv_fwd(x, kernel, pads):
    return _conv_same(x, kernel, pads), (x, kernel)


def _row_blocked_conv_bwd(pads, residuals, grad_y):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _conv_same(x_, kernel, pads), x)
    (grad_x,) = input_vjp(grad_y)

    (pad_top, pad_bottom), width_pads = pads
    x_rows_padded = jnp.pad(x, ((0, 0), (pad_top, pad_bottom), (0, 0), (0, 0)))
    kernel_height = kernel.shape[0]
    out_rows = grad_y.shape[1]
    step = _rows_per_block(grad_y.shape, grad_y.dtype.itemsize)
    grad_kernel = jnp.zeros(kernel.shape, jnp.float32)
    for start in range(0, out_rows, step):
        stop = min(start + step, out_rows)
        x_block = x_rows_padded[:, start : stop + kernel_height - 1]
        _, kernel_vjp = jax.vjp(
            lambda k_: _conv_same(x_block, k_, ((0, 0), width_pads)), kernel
        )
        grad_kernel = grad_kernel + kernel_vjp(grad_y[:, start:stop])[0]
    return grad_x, grad_kernel.astype(kernel.dtype)


_row_blocked_conv.defvjp(_row_blocked_conv_fwd, _row_blocked_conv_bwd)


def row_blocked_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """Stride-1 2-D convolution whose kernel gradient is computed in row blocks.

    Signature of `lax.conv_general_dilated` so it can be given to `nn.Conv` as
    `conv_general_dilated`; only the case `nn.Conv` produces for a stride-1,
    undilated, ungrouped NHWC conv is supported. lhs [N, H, W, Cin], rhs
    [KH, KW, Cin, Cout] -> [N, H', W', Cout], as `lax.conv_general_dilated`.

    Forward and input gradient are the plain ops. The kernel gradient is summed
    over blocks of output rows, each with an output-gradient slice of at most
    ~1 MiB: XLA:CPU's kernel-gradient conv slows down sharply once that operand
    leaves the cache. The result equals autodiff's up to float summation order.
    """
    _check_nhwc("lhs", lhs)
    if dimension_numbers is not None and tuple(
        lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    ) != tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_DIMENSIONS)):
        raise ValueError(f"dimension_numbers must be NHWC/HWIO, got {dimension_numbers}")
    unit = (1, 1)
    if (
        tuple(window_strides) != unit
        or tuple(lhs_dilation or unit) != unit
        or tuple(rhs_dilation or unit) != unit
        or feature_group_count != 1
        or precision is not None
    ):
        raise ValueError(
            "row_blocked_conv supports stride 1, no dilation, feature_group_count 1 "
            "and default precision only"
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], unit, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _row_blocked_conv(lhs, rhs, pads)
