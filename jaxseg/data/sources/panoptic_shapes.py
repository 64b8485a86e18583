"""`config.data.name = "panoptic_shapes"`: the shapes' things over stuff regions
(`jaxseg.data.panoptic_shapes`); splits train, validation, test.

Fields: those of `shapes` (`jaxseg.data.sources.shapes`), and
  stuff_class_names   the semantic head's classes, ("thing", "sky", "grass", "sand"):
                      0 = every thing pixel, then the stuff classes.
"""

from typing import Any

from jaxseg import registry
from jaxseg.data import panoptic_shapes, shapes
from jaxseg.data.sources import checks
from jaxseg.data.sources import shapes as shapes_source
from jaxseg.errors import ConfigError


def check(config: Any) -> None:
    """The shapes fields and the stuff class names of `config.data`."""
    shapes_source.check(config)
    names = tuple(checks.data_field(config, "stuff_class_names"))
    if names != panoptic_shapes.STUFF_CLASS_NAMES:
        raise ConfigError(
            f"config.data.stuff_class_names={names} must be {panoptic_shapes.STUFF_CLASS_NAMES}: "
            "the dataset's semantic classes, the thing class first."
        )


@registry.DATASETS.register("panoptic_shapes", splits=shapes.SPLITS, check=check)
def open_builder(data_config: Any, build: bool):
    """The prepared panoptic shapes builder of `data_config` (generated if missing)."""
    config = shapes_source.shapes_config_from_data_config(data_config)
    return panoptic_shapes.prepare_panoptic_shapes(config, data_config.data_dir, build=build)
