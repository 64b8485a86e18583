"""The top-level fields of an experiment config: what the training loop reads itself."""

import dataclasses
from typing import Any

from jaxseg import schema
from jaxseg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The top-level fields of an experiment config (the Flax examples' names).

    Attributes:
      seed: seeds the parameters, the data order and augmentation, dropout and sampling.
      batch_size: the global training batch (divisible by the devices).
      eval_batch_size: the global evaluation batch (divisible by the devices).
      num_train_steps: optimizer steps of the run.
      learning_rate: the peak learning rate (see `OptimizerConfig`).
      log_every_steps, eval_every_steps, checkpoint_every_steps: intervals in steps.
      keep_checkpoints: how many of the newest checkpoints are kept.
      num_prediction_images: validation images drawn in predictions.png.
      max_consecutive_nonfinite_steps: non-finite steps in a row that stop the run.
      grad_accumulation_steps: micro-batches per optimizer step.
      ema_decay: decay of the EMA of the params used for evaluation (0: no EMA).
      eval_workers: processes per host that map detections back to the images, paste and
        encode their masks during evaluation (0: the evaluation thread itself). With the
        input workers (`config.data.num_workers`) they share the host's cores.
      eval_scorer: the library that scores COCO AP: "pycocotools" (COCO's own) or
        "faster_coco_eval" (the same 12 numbers to 1e-9, in C++).
    """

    seed: int = schema.field(0, schema.integer(0))
    batch_size: int = schema.field(8, schema.integer(1))
    eval_batch_size: int = schema.field(16, schema.integer(1))
    num_train_steps: int = schema.field(2000, schema.integer(1))
    learning_rate: float = schema.field(3e-3, schema.positive_number)
    log_every_steps: int = schema.field(50, schema.integer(1))
    eval_every_steps: int = schema.field(500, schema.integer(1))
    checkpoint_every_steps: int = schema.field(500, schema.integer(1))
    keep_checkpoints: int = schema.field(3, schema.integer(1))
    num_prediction_images: int = schema.field(8, schema.integer(0))
    max_consecutive_nonfinite_steps: int = schema.field(10, schema.integer(1))
    grad_accumulation_steps: int = schema.field(1, schema.integer(1))
    ema_decay: float = schema.field(0.0, schema.fraction("[0, 1)", " (0 = no EMA)"))
    eval_workers: int = schema.field(0, schema.integer(0))
    eval_scorer: str = schema.field("pycocotools", schema.one_of("pycocotools", "faster_coco_eval"))

    def check(self, config: Any, path: str) -> None:
        if self.batch_size % self.grad_accumulation_steps:
            raise ConfigError(
                f"{path}.grad_accumulation_steps={self.grad_accumulation_steps} must divide "
                f"{path}.batch_size={self.batch_size}."
            )
