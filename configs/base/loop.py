"""What every experiment shares: the loop's fields (Flax-examples names) and the optimizer.

Experiment files start from `get_config()` and add `config.data` (see `configs/base/data.py`),
`config.model` and what their task needs (e.g. `config.loss`), then override what differs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The loop and optimizer defaults: AdamW with warmup and cosine decay, 2,000 steps."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_train_steps = 2000
    config.learning_rate = 3e-3
    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3
    config.num_prediction_images = 8
    # Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.
    config.max_consecutive_nonfinite_steps = 10
    # Micro-batches per optimizer step (batch_size must be divisible by it x devices).
    config.grad_accumulation_steps = 1
    # Decay of the EMA of params used for evaluation (0 = no EMA).
    config.ema_decay = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 1e-4
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True  # SGD only
    config.optimizer.grad_clip_norm = 1.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    # schedule "steps": the learning rate is multiplied by decay_factor at each decay step.
    config.optimizer.decay_steps = ()
    config.optimizer.decay_factor = 0.1
    return config
