"""Anchor boxes for several feature-pyramid levels, in the detectron2 convention.

On a level with stride `s`, the anchors of grid cell (row i, column j) are centered at
`((j + offset) * s, (i + offset) * s)` with `offset = 0` by default (detectron2's
`DefaultAnchorGenerator`; `offset=0.5` centers them in the cell). Each cell holds one
anchor per (size, aspect ratio), sizes outer, ratios inner: area `size**2`, width
`sqrt(size**2 / ratio)`, height `ratio * width` (ratio = height / width). Anchors are
ordered level by level, then row-major over the grid, then per cell, matching an RPN head
output flattened from `[H, W, anchors_per_cell]`. A level's grid is
`ceil(image_size / stride)`, the feature size of a stride-`s` backbone with "same" padding.
"""
import dataclasses
import math

import numpy as np


def _positive_numbers(values, name):
    if len(values) == 0 or any(not (v > 0) for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")


@dataclasses.dataclass(frozen=True)
class AnchorGenerator:
    """Static anchors `[A, 4]` float32 `(x1, y1, x2, y2)` for an image size.

    `sizes[l]` lists the anchor sizes (square roots of areas, pixels) of level `l`,
    `strides[l]` its stride in pixels; `aspect_ratios` (height / width) are shared by all
    levels. The arrays are NumPy, so they are compile-time constants under `jax.jit`.
    """

    sizes: tuple[tuple[float, ...], ...] = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    offset: float = 0.0

    def __post_init__(self):
        if len(self.sizes) != len(self.strides) or len(self.sizes) == 0:
            raise ValueError(
                f"sizes and strides must give one entry per level, got {len(self.sizes)} and {len(self.strides)}"
            )
        for level_sizes in self.sizes:
            _positive_numbers(level_sizes, "sizes of a level")
        _positive_numbers(self.aspect_ratios, "aspect_ratios")
        _positive_numbers(self.strides, "strides")
        if not 0.0 <= self.offset < 1.0:
            raise ValueError(f"offset must be in [0, 1), got {self.offset}")

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def num_anchors_per_cell(self, level: int) -> int:
        """Number of anchors at each grid cell of `level`."""
        return len(self.sizes[level]) * len(self.aspect_ratios)

    def cell_anchors(self, level: int) -> np.ndarray:
        """`[num_anchors_per_cell, 4]` float32 anchors of `level` centered at the origin."""
        shapes = []
        for size in self.sizes[level]:
            for ratio in self.aspect_ratios:
                width = math.sqrt(size * size / ratio)
                height = ratio * width
                shapes.append((-width / 2, -height / 2, width / 2, height / 2))
        return np.asarray(shapes, np.float32)

    def grid_sizes(self, image_height: int, image_width: int) -> tuple[tuple[int, int], ...]:
        """`(rows, columns)` of each level's grid: `ceil(image_size / stride)`."""
        if image_height < 1 or image_width < 1:
            raise ValueError(f"image size must be positive, got {image_height}x{image_width}")
        return tuple((-(-image_height // s), -(-image_width // s)) for s in self.strides)

    def num_anchors_per_level(self, image_height: int, image_width: int) -> tuple[int, ...]:
        """Number of anchors of each level, in the order they appear in `__call__`'s output."""
        grids = self.grid_sizes(image_height, image_width)
        return tuple(rows * cols * self.num_anchors_per_cell(level) for level, (rows, cols) in enumerate(grids))

    def level_anchors(self, level: int, grid_height: int, grid_width: int) -> np.ndarray:
        """`[grid_height * grid_width * num_anchors_per_cell, 4]` float32 anchors of one level."""
        stride = self.strides[level]
        xs = (np.arange(grid_width) + self.offset) * stride
        ys = (np.arange(grid_height) + self.offset) * stride
        center_y, center_x = np.meshgrid(ys, xs, indexing="ij")
        centers = np.stack([center_x, center_y, center_x, center_y], axis=-1).reshape(-1, 1, 4)
        return (centers + self.cell_anchors(level)[None]).reshape(-1, 4).astype(np.float32)

    def __call__(self, image_height: int, image_width: int) -> np.ndarray:
        """All anchors `[A, 4]` float32 for an image of `image_height x image_width` pixels."""
        grids = self.grid_sizes(image_height, image_width)
        return np.concatenate([self.level_anchors(level, *grid) for level, grid in enumerate(grids)], axis=0)

    def split_by_level(self, values, image_height: int, image_width: int, axis: int = 0) -> list:
        """Splits `values` (anchors or per-anchor outputs, length `A` on `axis`) into levels."""
        counts = self.num_anchors_per_level(image_height, image_width)
        if values.shape[axis] != sum(counts):
            raise ValueError(f"values must have {sum(counts)} anchors on axis {axis}, got shape {values.shape}")
        index = [slice(None)] * values.ndim
        levels, start = [], 0
        for count in counts:
            index[axis] = slice(start, start + count)
            levels.append(values[tuple(index)])
            start += count
        return levels
