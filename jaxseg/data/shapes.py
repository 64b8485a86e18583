"""Synthetic shapes: a TFDS builder that generates a procedural segmentation dataset.

Each example is an RGB image of a few circles, rectangles and triangles of random colours
and sizes painted over a noisy, textured background (smooth gradient, low-frequency colour
noise, optional stripes and soft blobs, per-pixel noise). Shapes are painted in order, so
later shapes occlude earlier ones; an instance keeps only its visible pixels, and an
instance with fewer than `min_visible_pixels` visible pixels is removed before the image is
rendered (the pixels it would have covered show what lies beneath it).

Nothing is downloaded: example `i` of a split is a pure function of
(config.seed, split, i) (see `generate_example`), so two builds of one config are
identical and a larger split contains the examples of a smaller one. TFDS stores the
examples of a split in an order fixed by hashing their indices.

Stored features (TFDS `array_record` format, readable without TensorFlow through
`builder.as_data_source()`):
  image         uint8 [S, S, 3]  PNG.
  semantic      uint8 [S, S, 1]  PNG; 0 = background, 1 = circle, 2 = rectangle,
                                 3 = triangle.
  instance_ids  uint8 [S, S, 1]  PNG; 0 = no instance, k = instance k - 1 (the k-th row of
                                 `boxes` / `labels`). Per-instance masks are
                                 `instance_ids == k` for k = 1..n (derived at read time).
  boxes         float32 [n, 4]   (x1, y1, x2, y2) in pixels: the tight box of the visible
                                 mask with exclusive ends, x1 = min column,
                                 x2 = max column + 1 (same for y), so x2 - x1 is the width.
  labels        int32 [n]        class ids in 1..3.
n may be 0 (an image with no object).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data import storage

CLASS_NAMES = ("background", "circle", "rectangle", "triangle")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "validation", "test")
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}
_MIN_IMAGE_SIZE = 16
_MAX_IMAGE_SIZE = 2048
_MAX_SHAPES = 255  # instance ids are stored in uint8
_MIN_COLOUR_CONTRAST = 50.0  # mean absolute difference per channel, in 0..255 units


@dataclasses.dataclass(eq=False, kw_only=True)
class ShapesConfig(tfds.core.BuilderConfig):
    """Parameters of one shapes dataset; build it with `shapes_config`, which names it.

    Object sizes are fractions of the image side: the diameter of a circle, the longer side
    of a rectangle, the circumscribed diameter of a triangle (before clipping at the image
    border and occlusion). They are drawn log-uniformly, so small objects are common.
    """

    image_size: int = 128
    num_train: int = 2000
    num_validation: int = 200
    num_test: int = 200
    min_shapes: int = 1
    max_shapes: int = 6
    min_object_size: float = 0.08
    max_object_size: float = 0.4
    empty_fraction: float = 0.02
    min_visible_pixels: int = 10
    seed: int = 0

    def __reduce__(self):
        # A copy in another process (an input worker) is made by `shapes_config`, so that it
        # is the predefined config itself where its name is one: TFDS refuses an equal copy.
        return (_config_from_params, ({name: getattr(self, name) for name in _DEFAULT_PARAMS},))

    def split_sizes(self) -> dict[str, int]:
        """Number of examples of each split, keyed by split name."""
        return {
            "train": self.num_train,
            "validation": self.num_validation,
            "test": self.num_test,
        }


def _config_name(params: dict) -> str:
    """A TFDS config name that encodes every generation parameter."""
    return (
        f"s{params['image_size']}"
        f"_n{params['num_train']}-{params['num_validation']}-{params['num_test']}"
        f"_k{params['min_shapes']}-{params['max_shapes']}"
        f"_o{params['min_object_size']:g}-{params['max_object_size']:g}"
        f"_e{params['empty_fraction']:g}"
        f"_p{params['min_visible_pixels']}"
        f"_seed{params['seed']}"
    )


def is_integer(value) -> bool:
    """True for Python and NumPy integers (not bools)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate_params(params: dict) -> None:
    """Raises ValueError naming the first invalid generation parameter."""
    unknown = set(params) - set(_DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown shapes parameter(s): {sorted(unknown)}")
    size = params["image_size"]
    if not is_integer(size) or not _MIN_IMAGE_SIZE <= size <= _MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an int in [{_MIN_IMAGE_SIZE}, {_MAX_IMAGE_SIZE}], got {size!r}"
        )
    for field in ("num_train", "num_validation", "num_test"):
        if not is_integer(params[field]) or params[field] < 1:
            raise ValueError(f"{field} must be a positive int, got {params[field]!r}")
    low, high = params["min_shapes"], params["max_shapes"]
    valid_counts = is_integer(low) and is_integer(high) and 0 <= low <= high
    if not (valid_counts and 1 <= high <= _MAX_SHAPES):
        raise ValueError(
            "min_shapes and max_shapes must be ints with 0 <= min_shapes <= max_shapes and "
            f"1 <= max_shapes <= {_MAX_SHAPES}, got {low!r} and {high!r}"
        )
    low, high = params["min_object_size"], params["max_object_size"]
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            "min_object_size and max_object_size must satisfy "
            f"0 < min_object_size <= max_object_size <= 1, got {low!r} and {high!r}"
        )
    if not 0.0 <= params["empty_fraction"] <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {params['empty_fraction']!r}")
    if not is_integer(params["min_visible_pixels"]) or params["min_visible_pixels"] < 1:
        raise ValueError(
            f"min_visible_pixels must be a positive int, got {params['min_visible_pixels']!r}"
        )
    if not is_integer(params["seed"]) or params["seed"] < 0:
        raise ValueError(f"seed must be a non-negative int, got {params['seed']!r}")


_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
_DEFAULT_PARAMS = {
    f.name: f.default for f in dataclasses.fields(ShapesConfig) if f.name not in _BASE_FIELDS
}

# The "small rare foreground" variant, for class-imbalance ablations: one or two small
# objects per image, so foreground pixels are a few percent of the image.
SMALL_RARE_FOREGROUND = {
    "min_shapes": 1,
    "max_shapes": 2,
    "min_object_size": 0.05,
    "max_object_size": 0.12,
}


def _make_config(params: dict) -> ShapesConfig:
    return ShapesConfig(
        name=_config_name(params),
        description="Procedural shapes: " + ", ".join(f"{k}={v}" for k, v in params.items()),
        **params,
    )


PREDEFINED_CONFIGS = (
    _make_config(dict(_DEFAULT_PARAMS)),
    _make_config({**_DEFAULT_PARAMS, **SMALL_RARE_FOREGROUND}),
)


def shapes_config(**overrides) -> ShapesConfig:
    """A validated `ShapesConfig` whose name encodes all its parameters.

    Args:
      **overrides: any `ShapesConfig` field (image_size, num_train, ..., seed); the others
        keep their defaults.

    Raises:
      ValueError: an unknown or invalid parameter, named in the message.
    """
    params = {**_DEFAULT_PARAMS, **overrides}
    _validate_params(params)
    name = _config_name(params)
    for predefined in PREDEFINED_CONFIGS:
        if predefined.name == name:
            return predefined
    return _make_config(params)


def _config_from_params(params: dict) -> ShapesConfig:
    """`shapes_config(**params)` (how a pickled `ShapesConfig` is rebuilt)."""
    return shapes_config(**params)


# --------------------------------------------------------------------------- rendering


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


def _render_background(rng: np.random.Generator, size: int) -> np.ndarray:
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


def _sample_shapes(rng, config: ShapesConfig) -> tuple[list[np.ndarray], list[int]]:
    """Full (unoccluded) bool [S, S] masks and class ids of the shapes, in paint order."""
    size = config.image_size
    if rng.random() < config.empty_fraction:
        count = 0
    else:
        count = int(rng.integers(config.min_shapes, config.max_shapes + 1))
    rows, cols = pixel_centres(size)
    log_low, log_high = np.log(config.min_object_size), np.log(config.max_object_size)
    masks, labels = [], []
    for _ in range(count):
        label = int(rng.integers(1, NUM_CLASSES))
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


def _visible_instances(masks, labels, size, min_visible_pixels):
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


def _render_image(rng, background, masks, size) -> np.ndarray:
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


def tight_boxes(instance_ids: np.ndarray, count: int) -> np.ndarray:
    """Tight boxes of instances 1..count of an id map.

    Args:
      instance_ids: [H, W] integer map, k = instance k - 1, 0 = none.
      count: number of instances n; each must have at least one pixel.

    Returns:
      float32 [n, 4] (x1, y1, x2, y2), x2 = max column + 1 and y2 = max row + 1.
    """
    boxes = np.zeros((count, 4), np.float32)
    for k in range(count):
        mask = instance_ids == k + 1
        columns = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        if columns.size == 0:
            raise ValueError(f"instance {k + 1} has no pixel in instance_ids")
        boxes[k] = (columns[0], rows[0], columns[-1] + 1, rows[-1] + 1)
    return boxes


def generate_example(config: ShapesConfig, split: str, index: int) -> dict[str, np.ndarray]:
    """Example `index` of `split`, a pure function of (config.seed, split, index).

    Returns:
      dict with image uint8 [S, S, 3], semantic uint8 [S, S] (0..3),
      instance_ids uint8 [S, S] (0 = none, k = instance k - 1), boxes float32 [n, 4]
      (x1, y1, x2, y2, exclusive ends), labels int32 [n] (1..3).
    """
    rng = example_rng(config, split, index)
    example = paint_things(rng, config, _render_background(rng, config.image_size))
    label_lookup = np.concatenate([[0], example["labels"]]).astype(np.uint8)
    return {**example, "semantic": label_lookup[example["instance_ids"]]}


def example_rng(config: ShapesConfig, split: str, index: int) -> np.random.Generator:
    """The random stream of example `index` of `split`: a pure function of (config.seed,
    split, index); ValueError for an unknown split or a bad index."""
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not is_integer(index) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    return np.random.default_rng([config.seed, _SPLIT_STREAMS[split], int(index)])


def paint_things(rng, config: ShapesConfig, background: np.ndarray) -> dict[str, np.ndarray]:
    """Shapes drawn from `rng` as `config` says, painted over `background` float32 [S, S, 3]
    (0..255): image uint8 [S, S, 3], instance_ids uint8 [S, S] (0 = none, k = instance
    k - 1), boxes float32 [n, 4] (tight, exclusive ends), labels int32 [n] (1..3)."""
    size = config.image_size
    masks, labels = _sample_shapes(rng, config)
    masks, labels, instance_ids = _visible_instances(
        masks, labels, size, config.min_visible_pixels
    )
    return {
        "image": _render_image(rng, background, masks, size),
        "instance_ids": instance_ids,
        "boxes": tight_boxes(instance_ids, len(labels)),
        "labels": np.array(labels, np.int32),
    }


# --------------------------------------------------------------------------- TFDS builder


def _encode_example(example: dict[str, np.ndarray]) -> dict:
    """PNG-encodes the image-like fields of a `generate_example` dict for TFDS.

    The noisy image barely compresses (about 25% at zlib level 1, for twice the encoding
    time of level 0), so it is stored uncompressed; the maps compress 30-fold at level 1.
    """
    return {
        "image": storage.png_bytes(example["image"], compress_level=0),
        "semantic": storage.png_bytes(example["semantic"], compress_level=1),
        "instance_ids": storage.png_bytes(example["instance_ids"], compress_level=1),
        "boxes": example["boxes"],
        "labels": example["labels"],
    }


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Procedurally generated circles, rectangles and triangles (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = list(PREDEFINED_CONFIGS)
    # TFDS's own look-up of this file imports the optional `importlib_resources` backport
    # when the builder lives in a package; naming the file directly avoids that.
    code_path = epath.Path(__file__)
    DESCRIPTION = __doc__

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                "semantic": tfds.features.Image(shape=(size, size, 1), encoding_format="png"),
                "instance_ids": tfds.features.Image(
                    shape=(size, size, 1), encoding_format="png"
                ),
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(split, count)
            for split, count in self.builder_config.split_sizes().items()
        }

    def generate_example(self, split: str, index: int) -> dict[str, np.ndarray]:
        """Example `index` of `split` of this builder's config (`generate_example`)."""
        return generate_example(self.builder_config, split, index)

    def _generate_examples(self, split: str, count: int):
        for index in range(count):
            yield index, _encode_example(self.generate_example(split, index))


def prepare_shapes(
    config: ShapesConfig,
    data_dir: str | None = None,
    *,
    build: bool = True,
    wait_timeout_s: float = 3600.0,
    poll_interval_s: float = 1.0,
) -> Shapes:
    """Returns a builder for `config` whose data exists under `data_dir`.

    With several processes sharing `data_dir`, call with `build=(process_index == 0)`:
    process 0 generates the data if missing; the others wait until TFDS has moved the
    finished dataset into place (it writes to a temporary directory and renames it), then
    open it.

    Args:
      config: from `shapes_config`.
      data_dir: TFDS data directory; None = TFDS default.
      build: generate the data if missing; if False, wait for another process to do so.
      wait_timeout_s: how long a non-building process waits before a TimeoutError.
      poll_interval_s: seconds between checks while waiting.
    """
    return storage.prepare(
        Shapes,
        config,
        data_dir,
        build=build,
        wait_timeout_s=wait_timeout_s,
        poll_interval_s=poll_interval_s,
    )
