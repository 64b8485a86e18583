"""The model an experiment config describes: the builder registered as `config.model.name`.

Models register themselves beside their code (`registry.MODELS.register`); see
`jaxseg.models.unet` and `jaxseg.models.mask_rcnn_config`.
"""

import flax.linen as nn
import ml_collections

from jaxseg import registry


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module of `config.model` for `config.data.num_classes` classes."""
    return registry.MODELS.get(config.model.name).target(config)
