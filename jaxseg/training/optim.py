"""Optimizers and learning-rate schedules of an experiment config (`config.optimizer`)."""

import jax.numpy as jnp
import ml_collections
import optax


def create_learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to `config.learning_rate`, then one of `optimizer.schedule`:

    - "cosine": cosine decay to 0 at `num_train_steps`;
    - "constant";
    - "steps": multiplied by `optimizer.decay_factor` from each of the steps in
      `optimizer.decay_steps` on (the step-decay of detectron2's 1x and 3x schedules).
    """
    opt = config.optimizer
    warmup = opt.warmup_steps
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warmup, config.num_train_steps, 0.0
        )
    ramp = optax.linear_schedule(0.0, config.learning_rate, warmup)
    if opt.schedule == "constant":
        after_warmup = optax.constant_schedule(config.learning_rate)
    else:
        after_warmup = _step_decay(
            config.learning_rate, [step - warmup for step in opt.decay_steps], opt.decay_factor
        )
    return optax.join_schedules([ramp, after_warmup], [warmup])


def _step_decay(value: float, boundaries: list[int], factor: float) -> optax.Schedule:
    """`value * factor**k` at a step past (or at) k of the ascending `boundaries`."""
    boundaries = jnp.asarray(boundaries, jnp.int32)

    def schedule(step):
        passed = jnp.sum(jnp.asarray(step) >= boundaries)
        return value * jnp.asarray(factor, jnp.float32) ** passed

    return schedule


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Gradient clipping followed by AdamW, or SGD with (Nesterov or heavy-ball) momentum and
    weight decay."""
    opt = config.optimizer
    if opt.name == "adamw":
        update = optax.adamw(schedule, weight_decay=opt.weight_decay)
    else:
        update = optax.chain(
            optax.add_decayed_weights(opt.weight_decay),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    if opt.grad_clip_norm is None:
        return update
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), update)
