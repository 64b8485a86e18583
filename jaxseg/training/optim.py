"""Optimizers and learning-rate schedules of an experiment config (`config.optimizer`)."""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxseg import schema
from jaxseg.errors import ConfigError
from jaxseg.training import param_groups


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
    config: ml_collections.ConfigDict, schedule: optax.Schedule, labels: Any = None
) -> optax.GradientTransformation:
    """Gradient clipping followed by AdamW, or SGD with (Nesterov or heavy-ball) momentum and
    weight decay, over the parameters `labels` gives (`param_groups.parameter_labels`).

    FROZEN parameters get zero updates and no optimizer state (`optax.multi_transform`);
    DECAYED parameters decay by `optimizer.weight_decay`, and NORM ones too with
    `optimizer.decay_norms` (an `optax.add_decayed_weights` mask). Without `labels` every
    parameter is DECAYED. The AdamW chain is optax's `adamw` with the decay masked. Fields a config lacks (a run written before they existed) take their
    `OptimizerConfig` defaults.
    """
    opt = schema.read_section(OptimizerConfig, config, "optimizer")
    decay = _weight_decay(opt, labels)
    if opt.name == "adamw":
        update = optax.chain(optax.scale_by_adam(), decay, optax.scale_by_learning_rate(schedule))
    else:
        update = optax.chain(decay, optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov))
    if opt.grad_clip_norm is not None:
        update = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), update)
    if labels is None or param_groups.FROZEN not in jax.tree.leaves(labels):
        return update
    trained = jax.tree.map(
        lambda label: param_groups.FROZEN if label == param_groups.FROZEN else "trained", labels
    )
    return optax.multi_transform({"trained": update, param_groups.FROZEN: optax.set_to_zero()}, trained)


def _weight_decay(opt: Any, labels: Any) -> optax.GradientTransformation:
    """`add_decayed_weights` on the decayed parameters. Unmasked where it decays every
    parameter, so that such runs keep the optimizer state of earlier versions (their
    checkpoints restore)."""
    decayed = (param_groups.DECAYED, param_groups.NORM) if opt.decay_norms else (param_groups.DECAYED,)
    if labels is None or all(label in decayed for label in jax.tree.leaves(labels)):
        return optax.add_decayed_weights(opt.weight_decay)
    return optax.add_decayed_weights(opt.weight_decay, mask=param_groups.mask_of(labels, *decayed))


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant", "steps")


def _decay_steps(value: Any, path: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or any(
        isinstance(step, bool) or not isinstance(step, int) for step in value
    ):
        raise ConfigError(f"{path}={value!r} must be a tuple of integers.")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The `config.optimizer` section (with `config.learning_rate` and `num_train_steps`).

    Attributes:
      name: "adamw", or "sgd" with momentum and weight decay.
      weight_decay: decoupled (AdamW) or added to the gradient (SGD).
      decay_norms: decay normalization layers' scales and biases too; False is detectron2's
        WEIGHT_DECAY_NORM = 0 of its recipes.
      momentum: SGD's momentum.
      nesterov: Nesterov momentum for SGD, else heavy-ball (as detectron2).
      grad_clip_norm: global gradient-norm clipping, None for none.
      schedule: "cosine" (to 0 at the last step), "constant" or "steps".
      warmup_steps: linear warmup from 0, before the schedule.
      decay_steps: schedule "steps": the learning rate is multiplied by `decay_factor` at
        each of these ascending steps.
      decay_factor: see `decay_steps`.
    """

    name: str = schema.field("adamw", schema.one_of(*OPTIMIZERS))
    weight_decay: float = schema.field(1e-4, schema.non_negative_number)
    decay_norms: bool = schema.field(True, schema.boolean)
    momentum: float = schema.field(0.9, schema.fraction("[0, 1)"))
    nesterov: bool = schema.field(True, schema.boolean)
    grad_clip_norm: Optional[float] = schema.field(1.0, schema.optional(schema.positive_number))
    schedule: str = schema.field("cosine", schema.one_of(*SCHEDULES))
    warmup_steps: int = schema.field(100, schema.integer(0))
    decay_steps: tuple = schema.field((), _decay_steps)
    decay_factor: float = schema.field(0.1, schema.fraction("(0, 1]"))

    def check(self, config: Any, path: str) -> None:
        total = config.num_train_steps
        if self.warmup_steps >= total:
            raise ConfigError(
                f"{path}.warmup_steps={self.warmup_steps} must be smaller than "
                f"config.num_train_steps={total}."
            )
        steps = self.decay_steps
        if self.schedule != "steps":
            if steps:
                raise ConfigError(
                    f"{path}.decay_steps={steps!r} only apply to {path}.schedule='steps' "
                    f"(it is {self.schedule!r})."
                )
            return
        if not steps or list(steps) != sorted(set(steps)) or steps[0] <= self.warmup_steps or (
            steps[-1] > total
        ):
            raise ConfigError(
                f"{path}.decay_steps={steps!r} must be ascending integers after "
                f"{path}.warmup_steps={self.warmup_steps} and at most "
                f"config.num_train_steps={total}."
            )
