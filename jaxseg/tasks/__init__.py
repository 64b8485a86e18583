"""What training does differently per task: semantic, instance, ...

Each task registers itself (`registry.TASKS.register`) and each model names its task, so
`task_for(config)` gives the `Task` of an experiment; `jaxseg.train` runs any task with
the same loop, sharding, checkpoints and logging.
"""

import ml_collections

from jaxseg import registry
from jaxseg.tasks.base import Evaluation, Task
from jaxseg.tasks.instance import InstanceSegmentation
from jaxseg.tasks.semantic import SemanticSegmentation

__all__ = ["Evaluation", "InstanceSegmentation", "SemanticSegmentation", "Task", "task_for"]


def task_for(config: ml_collections.ConfigDict) -> Task:
    """The task of the model `config.model.name`, for `config`."""
    return registry.TASKS.get(registry.MODELS.get(config.model.name).task).target(config)
