"""The model an experiment config describes: the builder registered as `config.model.name`.

Models register themselves beside their code (`registry.MODELS.register`); see
`jaxseg.models.unet` and `jaxseg.models.mask_rcnn_config`.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import ml_collections

from jaxseg import registry, schema


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module of `config.model` for `config.data.num_classes` classes."""
    return registry.MODELS.get(config.model.name).target(config)


def register_model(
    name: str, module: type, model_schema: type, *, task: str, from_data: Callable | None = None
) -> Callable:
    """Registers the Flax module class `module` as the model `name` of `task`.

    Its builder reads `config.model` through `model_schema` (see `jaxseg.schema`) and takes
    the class count from `config.data.num_classes` (and the fields `from_data(config.data)`
    returns, if given); it is returned. Schema fields the module lacks (such as
    `pretrained`, see `jaxseg.models.pretrained_config`) are for the code around the model
    and are not passed to it.
    """
    module_fields = {spec.name for spec in dataclasses.fields(module)}

    def build(config: ml_collections.ConfigDict) -> nn.Module:
        fields = schema.values(schema.read(model_schema, config.model, "config.model", config))
        kept = {name: value for name, value in fields.items() if name in module_fields}
        from_dataset = from_data(config.data) if from_data else {}
        return module(num_classes=config.data.num_classes, **from_dataset, **kept)

    build.__doc__ = f"The `{module.__name__}` of an experiment config (`{name}`)."
    return registry.MODELS.register(name, task=task, schema=model_schema)(build)
