"""What training does differently per task: semantic (U-Net) or instance (Mask R-CNN).

`task_for(config)` gives the `Task` of an experiment; `jaxseg.train` runs any task
with the same loop, sharding, checkpoints and logging.
"""

import ml_collections

from jaxseg.tasks.base import Evaluation, Task
from jaxseg.tasks.instance import InstanceSegmentation
from jaxseg.tasks.semantic import SemanticSegmentation

__all__ = ["Evaluation", "InstanceSegmentation", "SemanticSegmentation", "Task", "task_for"]


def task_for(config: ml_collections.ConfigDict) -> Task:
    """Instance segmentation for `config.model.name == "mask_rcnn"`, else semantic."""
    if config.model.name == "mask_rcnn":
        return InstanceSegmentation(config)
    return SemanticSegmentation(config)
