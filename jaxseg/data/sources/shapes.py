"""`config.data.name = "shapes"`: generated circles, rectangles and triangles
(`jaxseg.data.shapes`); splits train, validation, test.

Fields besides the common ones (`jaxseg.data.pipeline`):
  num_classes, class_names   4 and the 4 names, the background first.
  num_train, num_validation, num_test   examples per split.
  min_shapes, max_shapes, min_object_size, max_object_size, empty_fraction,
  min_visible_pixels, generation_seed   optional, see `jaxseg.data.shapes.ShapesConfig`
                      (`generation_seed` is its `seed`); missing ones take the defaults."""

from typing import Any

from jaxseg import registry, schema
from jaxseg.data import shapes
from jaxseg.data.sources import checks

# Optional `config.data` fields and the `ShapesConfig` fields they set.
GENERATION_FIELDS = {
    "min_shapes": "min_shapes",
    "max_shapes": "max_shapes",
    "min_object_size": "min_object_size",
    "max_object_size": "max_object_size",
    "empty_fraction": "empty_fraction",
    "min_visible_pixels": "min_visible_pixels",
    "generation_seed": "seed",
}


def shapes_config_from_data_config(data_config: Any) -> shapes.ShapesConfig:
    """The validated `ShapesConfig` that `data_config` describes (ValueError if invalid)."""
    params = {
        "image_size": data_config.image_size,
        "num_train": data_config.num_train,
        "num_validation": data_config.num_validation,
        "num_test": data_config.num_test,
    }
    for field, attr in GENERATION_FIELDS.items():
        if field in data_config:
            params[attr] = data_config[field]
    return shapes.shapes_config(**params)


def check(config: Any) -> None:
    """The class names, split sizes and generation fields of `config.data`, and no resize."""
    checks.class_names_match_count(config)
    checks.no_resize(config, "the shapes dataset")
    for split in ("num_train", "num_validation", "num_test"):
        schema.integer(1)(checks.data_field(config, split), f"config.data.{split}")
    checks.as_config_error("config.data: ", shapes_config_from_data_config, config.data)


@registry.DATASETS.register("shapes", splits=shapes.SPLITS, check=check)
def open_builder(data_config: Any, build: bool):
    """The prepared shapes builder of `data_config` (generated into data_dir if missing)."""
    config = shapes_config_from_data_config(data_config)
    return shapes.prepare_shapes(config, data_config.data_dir, build=build)
