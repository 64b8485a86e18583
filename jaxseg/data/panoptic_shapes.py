"""Panoptic shapes: the shapes dataset's things over "stuff", textured regions of 3 classes.

Each image is cut into regions of the stuff classes sky, grass and sand along smooth,
curving boundaries (the arg-max of one low-frequency random field per class, so an image
holds one, two or all three classes), each class with a texture of its own:
  sky    a smooth colour gradient in blue-grey hues, barely any grain;
  grass  fine stripes in green hues, in a direction drawn per image;
  sand   coarse speckle in ochre hues.
The things (circles, rectangles, triangles) are painted over them as in
`jaxseg.data.shapes` (occlusion, colours that contrast with what lies beneath, at least
`min_visible_pixels` visible pixels each).

Stored features are the shapes dataset's, so every reader of shapes reads these:
  image, instance_ids, boxes, labels   as in `jaxseg.data.shapes` (labels 1..3 = circle,
                                       rectangle, triangle).
  semantic   uint8 [S, S, 1]: Panoptic FPN's semantic target, 0 = a thing pixel (any
             thing), 1 = sky, 2 = grass, 3 = sand (`STUFF_CLASS_NAMES`).
Example `i` of a split is a pure function of (config.seed, split, i); the generation
parameters are those of `jaxseg.data.shapes.ShapesConfig`.
"""

from __future__ import annotations

import numpy as np
from etils import epath

from jaxseg.data import shapes, shapes_render, storage

# The semantic head's classes: 0 stands for every thing pixel, then the stuff classes.
STUFF_CLASS_NAMES = ("thing", "sky", "grass", "sand")
THING_CLASS_NAMES = shapes.CLASS_NAMES
_HUES = {  # per-class ranges of the base colour (R, G, B), 0..255
    "sky": ((90, 140, 170), (170, 200, 250)),
    "grass": ((30, 100, 20), (110, 190, 80)),
    "sand": ((170, 130, 60), (235, 200, 130)),
}


def _smooth_field(rng, size: int, grid: int) -> np.ndarray:
    """float32 [S, S]: unit-variance noise on a `grid` x `grid` lattice, bilinearly upsampled."""
    upsample = shapes_render.bilinear_upsample_matrix(grid, size)
    control = rng.standard_normal((grid, grid)).astype(np.float32)
    return upsample @ control @ upsample.T


def stuff_regions(rng, size: int) -> np.ndarray:
    """int64 [S, S] stuff index 0..2 (sky, grass, sand) of each pixel: the arg-max of one
    smooth field per class, each with a random offset so that some images lack a class."""
    fields = [_smooth_field(rng, size, int(rng.integers(2, 5))) + rng.normal(0.0, 0.8) for _ in range(3)]
    return np.argmax(np.stack(fields), axis=0)


def _texture(rng, name: str, size: int) -> np.ndarray:
    """float32 [S, S, 3] (0..255): the texture of stuff class `name` over the whole image."""
    low, high = (np.asarray(bound, np.float32) for bound in _HUES[name])
    base = rng.uniform(low, high).astype(np.float32)
    rows, cols = shapes_render.pixel_centres(size)
    if name == "sky":
        ramp = (rows + 0.3 * cols) / size
        return base + (rng.uniform(-40.0, 40.0) * ramp)[..., None] * np.ones(3, np.float32)
    if name == "grass":
        angle = rng.uniform(np.pi / 3, 2 * np.pi / 3)
        period = rng.uniform(3.0, 6.0)
        along = cols * np.cos(angle) + rows * np.sin(angle)
        stripes = rng.uniform(20.0, 40.0) * np.sin(2 * np.pi * along / period)
        return base + stripes[..., None] * np.array([0.6, 1.0, 0.5], np.float32)
    speckle = rng.uniform(-1.0, 1.0, (size // 2 + 1, size // 2 + 1)).astype(np.float32)
    speckle = np.repeat(np.repeat(speckle, 2, axis=0), 2, axis=1)[:size, :size]
    return base + rng.uniform(25.0, 45.0) * speckle[..., None]


def generate_example(config: shapes.ShapesConfig, split: str, index: int) -> dict[str, np.ndarray]:
    """Example `index` of `split`, a pure function of (config.seed, split, index).

    Returns:
      image uint8 [S, S, 3], semantic uint8 [S, S] (0 = thing, 1..3 = stuff),
      instance_ids uint8 [S, S], boxes float32 [n, 4], labels int32 [n] (1..3).
    """
    rng = shapes.example_rng(config, split, index)
    size = config.image_size
    regions = stuff_regions(rng, size)
    background = np.zeros((size, size, 3), np.float32)
    for stuff, name in enumerate(STUFF_CLASS_NAMES[1:]):
        inside = regions == stuff
        background[inside] = _texture(rng, name, size)[inside]
    example = shapes.paint_things(rng, config, background)
    semantic = np.where(example["instance_ids"] > 0, 0, regions + 1).astype(np.uint8)
    return {**example, "semantic": semantic}


class PanopticShapes(shapes.Shapes):
    """Things over stuff regions (see module docstring); the shapes builder's features."""

    VERSION = shapes.Shapes.VERSION
    RELEASE_NOTES = shapes.Shapes.RELEASE_NOTES
    BUILDER_CONFIGS = list(shapes.PREDEFINED_CONFIGS)
    code_path = epath.Path(__file__)
    DESCRIPTION = __doc__

    def generate_example(self, split: str, index: int) -> dict[str, np.ndarray]:
        return generate_example(self.builder_config, split, index)


def prepare_panoptic_shapes(config: shapes.ShapesConfig, data_dir: str | None = None, *, build: bool = True):
    """A `PanopticShapes` builder for `config` whose data exists under `data_dir` (see
    `shapes.prepare_shapes` for `build` with several processes)."""
    return storage.prepare(PanopticShapes, config, data_dir, build=build)
