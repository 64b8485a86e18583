"""Panoptic FPN's config schema and registration: `config.model.name = "panoptic_fpn"`.

Every attribute of `PanopticFPN` may be set in `config.model`, with Mask R-CNN's rules for
Mask R-CNN's fields, except `num_classes` (from `config.data.num_classes`: the thing
classes and the background) and `num_stuff_classes` (from `config.data.stuff_class_names`:
the thing class and the stuff classes). So may `pretrained`, as for Mask R-CNN.
"""

from typing import Any

from jaxseg import schema
from jaxseg.errors import ConfigError
from jaxseg.models import factory, mask_rcnn_config, pretrained_config
from jaxseg.models.panoptic_fpn import PanopticFPN

_SEMANTIC_NORMS = (None, "none", "group")


def _semantic_norm(value: Any, path: str) -> Any:
    """None (or "none" in a config) or "group"."""
    return None if schema.one_of(*_SEMANTIC_NORMS)(value, path) in (None, "none") else value


def _check_relations(model: Any, config: Any, path: str) -> None:
    """Mask R-CNN's cross-field rules, and the semantic head's classes from the data."""
    mask_rcnn_config.check_relations(model, config, path)
    names = config.data.get("stuff_class_names")
    if names is None or len(names) < 2:
        raise ConfigError(
            "config.data.stuff_class_names must name the semantic head's classes, the thing "
            f"class first and at least one stuff class; got {names!r}."
        )


def _stuff_classes(data_config: Any) -> dict:
    return {"num_stuff_classes": len(data_config.stuff_class_names)}


PanopticFPNConfig = pretrained_config.with_pretrained(
    schema.from_module(
        PanopticFPN,
        {
            **mask_rcnn_config.FIELD_RULES,
            "semantic_channels": schema.integer(1),
            "semantic_norm": _semantic_norm,
            "semantic_loss_weight": schema.non_negative_number,
            "ignore_label": schema.integer(0),
            "instance_score_threshold": schema.fraction("[0, 1)"),
            "overlap_threshold": schema.fraction("(0, 1]"),
            "stuff_area_limit": schema.integer(0),
        },
        exclude=("num_classes", "num_stuff_classes"),
        cross_check=_check_relations,
    ),
    pretrained_config.Backbone(submodule="resnet", norm_field="backbone_norm"),
)

build_panoptic_fpn = factory.register_model(
    "panoptic_fpn", PanopticFPN, PanopticFPNConfig, task="panoptic", from_data=_stuff_classes
)
