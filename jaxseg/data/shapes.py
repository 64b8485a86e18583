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

from jaxseg.data import shapes_render, storage

CLASS_NAMES = ("background", "circle", "rectangle", "triangle")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "validation", "test")
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}
_MIN_IMAGE_SIZE = 16
_MAX_IMAGE_SIZE = 2048
_MAX_SHAPES = 255  # instance ids are stored in uint8


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


# --------------------------------------------------------------------------- examples


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
    example = paint_things(rng, config, shapes_render.render_background(rng, config.image_size))
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
    masks, labels = shapes_render.sample_shapes(rng, config)
    masks, labels, instance_ids = shapes_render.visible_instances(
        masks, labels, size, config.min_visible_pixels
    )
    return {
        "image": shapes_render.render_image(rng, background, masks, size),
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
