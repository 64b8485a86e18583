"""Where a source image lies on its static S x S canvas, and the resizes that put it there.

A `Fit` says how an image of h x w is resized (aspect ratio kept) before it is padded at the
bottom and right to the canvas:
  longer-side fit (shorter_side None, the default): the longer side becomes L =
      max_longer_side (default S): h' = round(h·L / max(h, w)), w' alike (halves round up,
      at least 1).
  shortest-edge fit (shorter_side s): detectron2's ResizeShortestEdge. The shorter side
      becomes s unless the longer side would then exceed L, in which case the longer side
      becomes L: scale = s / min(h, w), then scaled by L / longer side where that is longer
      than L; h' = int(h·scale + 0.5), w' alike (detectron2's own float arithmetic).
      480 x 640 at (s, L) = (800, 1333): 800 x 1067; 500 x 2000: 333 x 1333.
Images are resized bilinearly (antialiased when shrinking, PIL), label maps and masks by
nearest neighbour (output pixel i samples input pixel floor((i + 0.5) · h / h')). A
`Placement` records the source size and the resized extent, and maps predictions on the
canvas back to the source image's own pixels.

The config fields (`jaxseg.data.pipeline`): image_size (S), resize_shorter_side (s, None =
longer-side fit), resize_max_longer_side (L, None = S); `fit_of` reads them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from jaxseg.data import shapes

RESIZE_FIELDS = ("resize_shorter_side", "resize_max_longer_side")


@dataclasses.dataclass(frozen=True)
class Fit:
    """How images are fitted to a canvas x canvas square (module docstring); build checked
    ones with `checked_fit`.

    canvas: S. shorter_side: s, or None for the longer-side fit. max_longer_side: L, or None
    for S.
    """

    canvas: int
    shorter_side: int | None = None
    max_longer_side: int | None = None

    @property
    def longer_limit(self) -> int:
        """L: the longest the resized longer side may be."""
        return self.canvas if self.max_longer_side is None else self.max_longer_side

    @property
    def tag(self) -> str:
        """"" for the longer-side fit to the canvas, else a short name of the fit (for the
        dataset config names, so another fit builds another dataset)."""
        if self.shorter_side is None and self.max_longer_side is None:
            return ""
        return f"_e{self.shorter_side or 0}m{self.longer_limit}"

    def with_shorter_side(self, shorter_side: int) -> Fit:
        """This fit with another shorter side s (a training scale)."""
        return dataclasses.replace(self, shorter_side=int(shorter_side))


def _check_side(field: str, value, low: int, high: int, meaning: str) -> int | None:
    if value is None:
        return None
    if not shapes.is_integer(value) or not low <= value <= high:
        raise ValueError(f"{field}={value!r} must be None or an int in [{low}, {high}] ({meaning})")
    return int(value)


def checked_fit(image_size: int, resize_shorter_side=None, resize_max_longer_side=None) -> Fit:
    """A checked `Fit` (image_size itself is checked by the datasets); ValueError starting
    with the name of the invalid field."""
    longer = _check_side(
        "resize_max_longer_side", resize_max_longer_side, 1, image_size,
        "the longer side's limit, at most image_size",
    )
    limit = image_size if longer is None else longer
    shorter = _check_side(
        "resize_shorter_side", resize_shorter_side, 1, limit,
        "the shorter side, at most resize_max_longer_side",
    )
    return Fit(int(image_size), shorter, longer)


def fit_of(config) -> Fit:
    """The checked `Fit` of a data config or dataset config (`image_size` and the optional
    `RESIZE_FIELDS`)."""
    return checked_fit(config.image_size, *(getattr(config, name, None) for name in RESIZE_FIELDS))


def resize_fields(data_config) -> dict:
    """{field: value} of `RESIZE_FIELDS` in `data_config` (None where missing)."""
    return {name: data_config.get(name) for name in RESIZE_FIELDS}


def resized_shape(height: int, width: int, fit: Fit) -> tuple[int, int]:
    """(h', w'): the size of an h x w image resized as `fit` says (module docstring)."""
    if fit.shorter_side is None:
        size, longer = fit.longer_limit, max(height, width)
        return (
            max(1, (2 * height * size + longer) // (2 * longer)),
            max(1, (2 * width * size + longer) // (2 * longer)),
        )
    # detectron2's ResizeShortestEdge.get_output_shape, operation for operation.
    scale = fit.shorter_side * 1.0 / min(height, width)
    if height < width:
        new_height, new_width = fit.shorter_side * 1.0, scale * width
    else:
        new_height, new_width = scale * height, fit.shorter_side * 1.0
    if max(new_height, new_width) > fit.longer_limit:
        scale = fit.longer_limit * 1.0 / max(new_height, new_width)
        new_height, new_width = new_height * scale, new_width * scale
    return max(1, int(new_height + 0.5)), max(1, int(new_width + 0.5))


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h, w, ...] -> [height, width, ...] same dtype: output pixel i samples input pixel
    floor((i + 0.5) · h / height), columns alike."""
    rows = (2 * np.arange(height) + 1) * array.shape[0] // (2 * height)
    columns = (2 * np.arange(width) + 1) * array.shape[1] // (2 * width)
    return array[rows[:, None], columns[None, :]]


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where an image of height x width lies on its S x S canvas: resized to
    valid_height x valid_width at the top left, the rest padding."""

    height: int
    width: int
    valid_height: int
    valid_width: int

    def label_map_to_image(self, values: np.ndarray) -> np.ndarray:
        """[S, S] canvas values (class ids) -> [height, width] same dtype: the valid region
        resized back by nearest neighbour (`resize_nearest`)."""
        valid = values[: self.valid_height, : self.valid_width]
        return resize_nearest(valid, self.height, self.width)

    def boxes_to_image(self, boxes: np.ndarray) -> np.ndarray:
        """float32 [n, 4] (x1, y1, x2, y2) in canvas pixels -> the same boxes in image
        pixels, clipped to the image."""
        scale = np.array(
            [self.width / self.valid_width, self.height / self.valid_height] * 2, np.float32
        )
        limits = np.array([self.width, self.height] * 2, np.float32)
        return np.clip(np.asarray(boxes, np.float32) * scale, 0.0, limits)


def placement(source_hw: tuple[int, int], fit: Fit) -> Placement:
    """Where an image of (height, width) `source_hw` lies on the canvas of `fit`."""
    return Placement(*source_hw, *resized_shape(*source_hw, fit))


def fit_image(image: np.ndarray, fit: Fit) -> tuple[np.ndarray, Placement]:
    """uint8 [h, w, 3] -> uint8 [S, S, 3] canvas (bilinear resize as `fit` says, zero
    padding) and the image's `Placement` on it."""
    placed = placement(image.shape[:2], fit)
    resized = Image.fromarray(image).resize(
        (placed.valid_width, placed.valid_height), Image.Resampling.BILINEAR
    )
    canvas = np.zeros((fit.canvas, fit.canvas, 3), np.uint8)
    canvas[: placed.valid_height, : placed.valid_width] = np.asarray(resized)
    return canvas, placed


def fit_nearest(array: np.ndarray, fit: Fit, fill: int) -> np.ndarray:
    """[h, w, ...] -> [S, S, ...] same dtype: nearest-neighbour resize as `fit` says, `fill`
    padding."""
    new_height, new_width = resized_shape(array.shape[0], array.shape[1], fit)
    fitted = np.full((fit.canvas, fit.canvas, *array.shape[2:]), fill, array.dtype)
    fitted[:new_height, :new_width] = resize_nearest(array, new_height, new_width)
    return fitted
