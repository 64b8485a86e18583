"""Per-example training augmentations of decoded examples: multi-scale shortest-edge
resizing, colour jitter and scale jitter.

The functions take and return decoded examples as `pipeline.DecodedSource` gives them: image
[H, W, 3] (uint8, or float32 in [0, 255] once augmented), semantic int32 [H, W], masks uint8
[n, H, W] (0/1), boxes float32 [n, 4] (x1, y1, x2, y2, exclusive ends), labels int32 [n].
The random draws come from a numpy Generator the caller derives from (seed, step, row), so a
training batch stays a pure function of (seed, step).

Colour jitter with strength s draws brightness, contrast and saturation factors uniformly
in [1 - s, 1 + s] and applies them in that order to the image, in float32, clipping to
[0, 255] after each (as torchvision's ColorJitter does, in a fixed order):
  brightness b:  x <- b·x
  contrast c:    x <- c·x + (1 - c)·mean(gray(x))   (one mean over the whole image)
  saturation t:  x <- t·x + (1 - t)·gray(x)         (per pixel)
with gray(x) = 0.299 R + 0.587 G + 0.114 B.

Scale jitter with range (lo, hi) draws a factor f uniformly in [lo, hi] and resizes the
content to round(H·f) x round(W·f) (aspect ratio kept). A side longer than the static size
is cropped at an offset drawn uniformly from the valid ones; a shorter one is padded at the
bottom or right (image 0, semantic the ignore label, masks 0), as the folder datasets pad.
Output pixel i of an axis shows scaled pixel k = i + offset, which is source coordinate
(k + 0.5)·H / round(H·f) - 0.5: the image samples it bilinearly (edges clamped, no
antialiasing, so factors well below 1/2 alias), semantic maps and masks take the nearest
source pixel floor((k + 0.5)·H / round(H·f)). Boxes become the tight boxes of the new masks,
and instances left without pixels are dropped.

Multi-scale training (detectron2's ResizeShortestEdge with several shorter sides) works on
the stored examples, which the dataset fitted at the test-time shorter side s
(`geometry.Fit`): each example draws one of the training sides s_i <= s, computes the size
(h_i, w_i) that fitting its source image (h, w) at s_i gives (`geometry.resized_shape`,
detectron2's rounding) and resizes its content (the placement's valid region at the top
left) to that size, sampling as scale jitter does (scale h / h_i per axis, no offset), then
pads back to the canvas. Since s_i <= s the content always fits. The pixels are resampled
from the stored content; datasets whose records keep the source files (COCO-format
folders) fit the source image at (h_i, w_i) instead (`drawn_fit`). It runs first, before the flip
(`jaxseg.data.batching`), as detectron2 resizes before it flips.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxseg.data import geometry, shapes
from jaxseg.schema import is_finite_number, is_number

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which augmentations a training stream applies; build it with `augmentation`.

    scale_jitter: (min_scale, max_scale), or None for none.
    color_jitter: strength s in [0, 1]; 0 for none.
    ignore_label: the semantic label of the padding scale jitter and multi-scale add.
    shorter_sides: the training shorter sides to draw from, or None for no multi-scale.
    fit: the test-time `geometry.Fit` the examples were stored with (read with
      shorter_sides).
    """

    scale_jitter: tuple[float, float] | None = None
    color_jitter: float = 0.0
    ignore_label: int = 255
    shorter_sides: tuple[int, ...] | None = None
    fit: geometry.Fit | None = None

    @property
    def enabled(self) -> bool:
        return (
            self.scale_jitter is not None or self.color_jitter > 0 or self.shorter_sides is not None
        )


def _checked_shorter_sides(shorter_sides, fit, scale_jitter) -> tuple[int, ...] | None:
    if shorter_sides is None:
        return None
    field = f"train_shorter_sides={shorter_sides!r}"
    if fit is None or fit.shorter_side is None:
        raise ValueError(f"{field} needs resize_shorter_side (the test-time shorter side) set")
    if scale_jitter is not None:
        raise ValueError(
            f"{field} and scale_jitter={scale_jitter!r} exclude each other: set one to None"
        )
    if (
        not isinstance(shorter_sides, (tuple, list))
        or not shorter_sides
        or not all(shapes.is_integer(v) and 1 <= v <= fit.shorter_side for v in shorter_sides)
    ):
        raise ValueError(
            f"{field} must be None or a non-empty tuple of ints in [1, {fit.shorter_side}] "
            "(at most resize_shorter_side)"
        )
    return tuple(int(v) for v in shorter_sides)


def augmentation(
    scale_jitter=None, color_jitter=0.0, ignore_label=255, shorter_sides=None, fit=None
) -> Augmentation:
    """A validated `Augmentation`; ValueError starting with the name of an invalid argument
    (`shorter_sides` is the config's `train_shorter_sides`)."""
    if scale_jitter is not None:
        if (
            not isinstance(scale_jitter, (tuple, list))
            or len(scale_jitter) != 2
            or not all(map(is_finite_number, scale_jitter))
            or not 0 < scale_jitter[0] <= scale_jitter[1]
        ):
            raise ValueError(
                f"scale_jitter={scale_jitter!r} must be None or (min_scale, max_scale) with "
                "0 < min_scale <= max_scale"
            )
        scale_jitter = (float(scale_jitter[0]), float(scale_jitter[1]))
    if not is_number(color_jitter) or not 0 <= color_jitter <= 1:
        raise ValueError(f"color_jitter={color_jitter!r} must be a number in [0, 1] (0 = off)")
    if not shapes.is_integer(ignore_label) or ignore_label < 0:
        raise ValueError(f"ignore_label={ignore_label!r} must be a non-negative int")
    shorter_sides = _checked_shorter_sides(shorter_sides, fit, scale_jitter)
    return Augmentation(scale_jitter, float(color_jitter), int(ignore_label), shorter_sides, fit)


def color_jitter(image: np.ndarray, brightness, contrast, saturation) -> np.ndarray:
    """[H, W, 3] uint8 or float32 in [0, 255] -> float32 [H, W, 3] in [0, 255] (see above)."""
    # In place where possible: fresh large arrays cost page faults.
    weights = np.asarray(GRAY_WEIGHTS, np.float32)
    jittered = np.multiply(image, np.float32(brightness), dtype=np.float32)
    np.clip(jittered, 0, 255, out=jittered)
    mean = np.mean(jittered @ weights)
    jittered *= np.float32(contrast)
    jittered += np.float32((1 - contrast) * mean)
    np.clip(jittered, 0, 255, out=jittered)
    gray = jittered @ weights
    gray *= np.float32(1 - saturation)
    jittered *= np.float32(saturation)
    jittered += gray[..., None]
    return np.clip(jittered, 0, 255, out=jittered)


def scaled_size(size: int, factor: float) -> int:
    """round(size·factor), at least 1: the side of the scaled content."""
    return max(1, math.floor(size * factor + 0.5))


@dataclasses.dataclass(frozen=True)
class _AxisSampling:
    """Where the `count` leading output pixels of one axis sample the source (int64 / float32
    [count] each); the output pixels after them are padding."""

    count: int
    nearest: np.ndarray
    low: np.ndarray
    high: np.ndarray
    weight: np.ndarray


def _axis_sampling(size: int, scaled: int, offset: int) -> _AxisSampling:
    """Sampling of an axis of `size` pixels scaled to `scaled`, shown from `offset` on."""
    positions = offset + np.arange(min(size, scaled - offset), dtype=np.int64)
    coordinates = np.clip((positions + 0.5) * (size / scaled) - 0.5, 0, size - 1)
    low = np.floor(coordinates).astype(np.int64)
    return _AxisSampling(
        count=len(positions),
        nearest=(2 * positions + 1) * size // (2 * scaled),
        low=low,
        high=np.minimum(low + 1, size - 1),
        weight=(coordinates - low).astype(np.float32),
    )


def _bilinear(image: np.ndarray, rows: _AxisSampling, columns: _AxisSampling) -> np.ndarray:
    """float32 [rows.count, columns.count, 3]: `image` [H, W, 3] sampled bilinearly."""
    top, bottom = image[rows.low], image[rows.high]
    mixed = np.subtract(bottom, top, dtype=np.float32)
    mixed *= rows.weight[:, None, None]
    mixed += top
    left = np.take(mixed, columns.low, axis=1)
    right = np.take(mixed, columns.high, axis=1)
    right -= left
    right *= columns.weight[None, :, None]
    left += right
    return left


def _nearest(array, rows: _AxisSampling, columns: _AxisSampling, first_axis: int):
    """`array` [..., H, W, ...] (H on `first_axis`) at the nearest source pixels, C-ordered."""
    # np.take, one axis at a time: numpy's advanced indexing gives transposed memory layouts.
    picked = np.take(array, rows.nearest, axis=first_axis)
    return np.take(picked, columns.nearest, axis=first_axis + 1)


def _placed(sampled: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    """`sampled` at the start of every axis of an array of `shape` filled with `fill` (the
    array itself where it has that shape)."""
    if sampled.shape == shape:
        return sampled
    placed = np.full(shape, fill, sampled.dtype)
    placed[tuple(slice(0, side) for side in sampled.shape)] = sampled
    return placed


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """float32 [n, 4] (x1, y1, x2, y2), exclusive ends, of non-empty masks [n, H, W]."""
    height, width = masks.shape[1:]
    rows = masks.any(axis=2)
    columns = masks.any(axis=1)
    return np.stack(
        [
            columns.argmax(axis=1),
            rows.argmax(axis=1),
            width - columns[:, ::-1].argmax(axis=1),
            height - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.float32)


def scale_example(
    example: dict[str, np.ndarray], factor: float, offset: tuple[int, int], ignore_label: int
) -> dict[str, np.ndarray]:
    """Scales `example`'s content by `factor` and crops or pads it back to its size.

    Args:
      example: a decoded example (module docstring), H x W.
      factor: the scale f > 0.
      offset: (row, column) of the scaled content shown at the top left; each in
        [0, round(side·f) - side] where the scaled side is longer, else 0.
      ignore_label: the semantic label of the padding.

    Returns:
      The example at H x W with the image float32 in [0, 255], the boxes the tight boxes of
      the new masks, and only the instances with pixels left.
    """
    height, width = example["semantic"].shape
    rows = _axis_sampling(height, scaled_size(height, factor), offset[0])
    columns = _axis_sampling(width, scaled_size(width, factor), offset[1])
    return _resampled(example, rows, columns, ignore_label)


def _resampled(example, rows: _AxisSampling, columns: _AxisSampling, ignore_label: int) -> dict:
    """`example` sampled at `rows` x `columns`, padded back to its size (`scale_example`)."""
    height, width = example["semantic"].shape
    image = _bilinear(example["image"], rows, columns)
    semantic = _nearest(example["semantic"], rows, columns, first_axis=0)
    masks = _nearest(example["masks"], rows, columns, first_axis=1)
    kept = masks.any(axis=(1, 2))
    if not kept.all():
        masks = masks[kept]
    masks = _placed(masks, (len(masks), height, width), 0)
    return {
        "image": _placed(image, (height, width, 3), 0),
        "semantic": _placed(semantic, (height, width), ignore_label),
        "masks": masks,
        "boxes": tight_boxes(masks),
        "labels": example["labels"][kept],
    }


def resize_content(
    example: dict[str, np.ndarray], content_hw: tuple[int, int], target_hw: tuple[int, int],
    ignore_label: int,
) -> dict[str, np.ndarray]:
    """Resizes `example`'s content, its top-left `content_hw` (the rest padding), to
    `target_hw` (each side at most the content's) and pads it back to its H x W.

    Returns the example as `scale_example` does (image float32, tight boxes, only the
    instances with pixels left).
    """
    rows = _axis_sampling(content_hw[0], target_hw[0], 0)
    columns = _axis_sampling(content_hw[1], target_hw[1], 0)
    return _resampled(example, rows, columns, ignore_label)


def drawn_fit(rng: np.random.Generator, config: Augmentation) -> geometry.Fit:
    """The test-time fit at one of `config.shorter_sides` (not None), drawn from `rng`."""
    side = config.shorter_sides[int(rng.integers(len(config.shorter_sides)))]
    return config.fit.with_shorter_side(side)


def multi_scale(
    example: dict[str, np.ndarray], rng: np.random.Generator, config: Augmentation,
    placement: geometry.Placement | None,
) -> dict[str, np.ndarray]:
    """`example` at one of `config.shorter_sides`, drawn from `rng` (module docstring); the
    example itself where there are none. `placement`: where its source image lies on the
    canvas (None: the source is the whole canvas)."""
    if config.shorter_sides is None:
        return example
    fit = drawn_fit(rng, config)
    if placement is None:
        size = example["semantic"].shape[0]
        placement = geometry.Placement(size, size, size, size)
    content_hw = (placement.valid_height, placement.valid_width)
    target_hw = geometry.resized_shape(placement.height, placement.width, fit)
    if target_hw == content_hw:
        return example
    return resize_content(example, content_hw, target_hw, config.ignore_label)


def _crop_offset(rng: np.random.Generator, size: int, scaled: int) -> int:
    return int(rng.integers(0, scaled - size + 1)) if scaled > size else 0


def augment(
    example: dict[str, np.ndarray], rng: np.random.Generator, config: Augmentation
) -> dict[str, np.ndarray]:
    """`config`'s colour jitter, then scale jitter, of a decoded example (`rng` draws all;
    `multi_scale` runs separately, before the flip)."""
    if config.color_jitter > 0:
        strength = config.color_jitter
        factors = rng.uniform(1 - strength, 1 + strength, size=3)
        example = {**example, "image": color_jitter(example["image"], *factors)}
    if config.scale_jitter is not None:
        factor = rng.uniform(*config.scale_jitter)
        height, width = example["semantic"].shape
        offset = (
            _crop_offset(rng, height, scaled_size(height, factor)),
            _crop_offset(rng, width, scaled_size(width, factor)),
        )
        example = scale_example(example, factor, offset, config.ignore_label)
    return example
