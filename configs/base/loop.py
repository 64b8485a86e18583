"""What every experiment shares: the loop's fields (Flax-examples names) and the optimizer.

Experiment files start from `get_config()` and add `config.data` (see `configs/base/data.py`),
`config.model` and what their task needs (e.g. `config.loss`), then override what differs.
The values are the schemas' defaults: `jaxseg.training.loop_config.LoopConfig` and
`jaxseg.training.optim.OptimizerConfig` say what each field means.
"""

import ml_collections

from jaxseg import schema
from jaxseg.training.loop_config import LoopConfig
from jaxseg.training.optim import OptimizerConfig


def get_config() -> ml_collections.ConfigDict:
    """The loop and optimizer defaults: AdamW with warmup and cosine decay, 2,000 steps."""
    config = ml_collections.ConfigDict(schema.defaults(LoopConfig))
    config.optimizer = ml_collections.ConfigDict(schema.defaults(OptimizerConfig))
    return config
