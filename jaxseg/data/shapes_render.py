"""Drawing the synthetic shapes: textured backgrounds, shape masks, occlusion and colours.

All functions are numpy and draw their randomness from the `np.random.Generator` they are
given, in a fixed order: `jaxseg.data.shapes.generate_example` depends on that order for
its examples to be a pure function of (seed, split, index).
"""
from __future__ import annotations

import numpy as np

_MIN_COLOUR_CONTRAST = 50.0  # mean absolute difference per channel, in 0..255 units


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column pixel-centre coordinates, float32 [S, 1] and [1, S]."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    return centres[:, None], centres[None, :]


def bilinear_upsample_matrix(grid: int, size: int) -> np.ndarray:
    """float32 [size, grid] matrix interpolating `grid` control points over `size` pixels."""
    position = (np.arange(size, dtype=np.float32) + 0.5) / size * (grid - 1)
    low = np.minimum(np.floor(position).astype(np.int64), grid - 2)
    fraction = position - low
    matrix = np.zeros((size, grid), np.float32)
    matrix[np.arange(size), low] = 1.0 - fraction
    matrix[np.arange(size), low + 1] = fraction
    return matrix


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background, float32 [S, S, 3] in roughly 0..255."""
    rows, cols = pixel_centres(size)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (cols * np.cos(angle) + rows * np.sin(angle)) / size
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(20.0, 235.0, size=(2, 3)).astype(np.float32)
    background = start + ramp[..., None] * (end - start)

    grid = int(rng.integers(3, 7))
    control = rng.normal(0.0, rng.uniform(10.0, 30.0), size=(grid, grid, 3)).astype(np.float32)
    upsample = bilinear_upsample_matrix(grid, size)
    smooth_rows = np.tensordot(upsample, control, axes=(1, 0))  # [S, grid, 3]
    background += np.tensordot(smooth_rows, upsample, axes=(1, 1)).transpose(0, 2, 1)

    if rng.random() < 0.5:
        stripe_angle = rng.uniform(0.0, np.pi)
        cycles = rng.uniform(3.0, 12.0)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        along = (cols * np.cos(stripe_angle) + rows * np.sin(stripe_angle)) / size
        stripes = rng.uniform(8.0, 25.0) * np.sin(2.0 * np.pi * cycles * along + phase)
        background += stripes[..., None]

    for _ in range(int(rng.integers(0, 3))):
        centre_row, centre_col = (float(c) for c in rng.uniform(0.0, size, size=2))
        sigma = rng.uniform(0.05, 0.2) * size
        weight = np.exp(-((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / (2 * sigma**2))
        alpha = rng.uniform(0.2, 0.5) * weight[..., None]
        colour = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        background = background * (1.0 - alpha) + colour * alpha
    return background.astype(np.float32)


# Mask functions: (rng, rows float32 [S, 1], cols float32 [1, S], centre (row, col),
# extent in pixels) -> bool [S, S]; each draws its own remaining parameters from rng.


def _circle_mask(rng, rows, cols, centre, extent) -> np.ndarray:
    radius = extent / 2.0
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _rectangle_mask(rng, rows, cols, centre, extent) -> np.ndarray:
    long_side = extent
    short_side = extent * rng.uniform(0.4, 1.0)
    angle = rng.uniform(0.0, np.pi / 2) if rng.random() < 0.5 else 0.0
    dy, dx = rows - centre[0], cols - centre[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    return (np.abs(along) <= long_side / 2.0) & (np.abs(across) <= short_side / 2.0)


def _triangle_mask(rng, rows, cols, centre, extent) -> np.ndarray:
    radius = extent / 2.0
    angles = rng.uniform(0.0, 2 * np.pi) + np.array([0.0, 2.0, 4.0]) * np.pi / 3
    angles = angles + rng.uniform(-0.35, 0.35, size=3)
    vertex_rows = centre[0] + radius * np.sin(angles)
    vertex_cols = centre[1] + radius * np.cos(angles)
    signs = []
    for i in range(3):
        j = (i + 1) % 3
        edge_row, edge_col = vertex_rows[j] - vertex_rows[i], vertex_cols[j] - vertex_cols[i]
        signs.append(edge_col * (rows - vertex_rows[i]) - edge_row * (cols - vertex_cols[i]))
    positive = (signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)
    negative = (signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0)
    return positive | negative


_MASK_FUNCTIONS = {1: _circle_mask, 2: _rectangle_mask, 3: _triangle_mask}


def sample_shapes(rng, config) -> tuple[list[np.ndarray], list[int]]:
    """Full (unoccluded) bool [S, S] masks and class ids of the shapes a `shapes.ShapesConfig`
    draws, in paint order."""
    size = config.image_size
    if rng.random() < config.empty_fraction:
        count = 0
    else:
        count = int(rng.integers(config.min_shapes, config.max_shapes + 1))
    rows, cols = pixel_centres(size)
    log_low, log_high = np.log(config.min_object_size), np.log(config.max_object_size)
    masks, labels = [], []
    for _ in range(count):
        label = int(rng.integers(1, len(_MASK_FUNCTIONS) + 1))
        extent = float(np.exp(rng.uniform(log_low, log_high))) * size
        centre = [float(c) for c in rng.uniform(0.0, size, size=2)]
        masks.append(_MASK_FUNCTIONS[label](rng, rows, cols, centre, extent))
        labels.append(label)
    return masks, labels


def _paint_ids(masks: list[np.ndarray], size: int) -> np.ndarray:
    """uint8 [S, S] map of the last mask (1-based) covering each pixel; 0 where none."""
    ids = np.zeros((size, size), np.uint8)
    for index, mask in enumerate(masks):
        ids[mask] = index + 1
    return ids


def visible_instances(masks, labels, size, min_visible_pixels):
    """Drops shapes with too few visible pixels; returns kept masks, labels and id map.

    Removing a shape only uncovers pixels of the others, so one pass is enough: every kept
    shape had at least `min_visible_pixels` visible pixels before and still has.
    """
    counts = np.bincount(_paint_ids(masks, size).ravel(), minlength=len(masks) + 1)[1:]
    keep = [i for i in range(len(masks)) if counts[i] >= min_visible_pixels]
    kept_masks = [masks[i] for i in keep]
    return kept_masks, [labels[i] for i in keep], _paint_ids(kept_masks, size)


def _pick_colour(rng, underneath: np.ndarray) -> np.ndarray:
    """A random float32 [3] colour contrasting with the mean of `underneath` [P, 3]."""
    reference = underneath.mean(axis=0)
    best, best_contrast = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        contrast = float(np.abs(colour - reference).mean())
        if contrast > best_contrast:
            best, best_contrast = colour, contrast
        if contrast >= _MIN_COLOUR_CONTRAST:
            break
    return best


def render_image(rng, background, masks, size) -> np.ndarray:
    """Paints the masks in order over the background, adds noise; uint8 [S, S, 3]."""
    canvas = background.copy()
    for mask in masks:
        rows, cols = np.nonzero(mask)
        colour = _pick_colour(rng, canvas[rows, cols])
        angle = rng.uniform(0.0, 2.0 * np.pi)
        strength = rng.uniform(-30.0, 30.0) / size
        shading = strength * (cols * np.cos(angle) + rows * np.sin(angle)).astype(np.float32)
        canvas[rows, cols] = colour + shading[:, None]
    sigma = rng.uniform(3.0, 10.0)
    canvas += sigma * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
