"""The train state: parameters, optimizer state, BatchNorm statistics, EMA, NaN-guard counters."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxseg import sharding
from jaxseg import tasks
from jaxseg.models import pretrained_config
from jaxseg.training import param_groups
from jaxseg.training.optim import create_optimizer


class TrainState(train_state.TrainState):
    """Optimizer state plus BatchNorm statistics, the run's base RNG key and NaN-guard counters.

    `nonfinite_streak` counts the latest consecutive steps whose loss or
    gradients were not finite (their updates were skipped), `nonfinite_steps`
    all such steps of the run (int32 scalars). `ema_params` is the exponential
    moving average of `params` (same tree, float32) when `config.ema_decay > 0`,
    else None; evaluation uses it when present (see `eval_params`).
    """

    batch_stats: Any
    rng: jax.Array
    nonfinite_streak: jax.Array
    nonfinite_steps: jax.Array
    ema_params: Any = None


def eval_params(state: TrainState) -> Any:
    """The params evaluation uses: the EMA params when kept, else the trained params."""
    return state.params if state.ema_params is None else state.ema_params


def eval_variables(state: TrainState) -> dict[str, Any]:
    """The model variables evaluation and prediction use: `eval_params` and the running
    batch statistics."""
    return {"params": eval_params(state), "batch_stats": state.batch_stats}


def create_train_state(
    rng: jax.Array,
    task: tasks.Task,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    keep_ema: bool = False,
    pretrained: Any = None,
) -> TrainState:
    """Initializes the task model's params for `[H, W, C]` images, batch statistics and optimizer.

    `pretrained` ({collection: {submodule: tree}}, e.g. a backbone's ImageNet weights from
    `pretrained_config.backbone_variables`) replaces those initialized subtrees
    (`pretrained_config.replace_subtrees`). With `keep_ema` the EMA params start as a copy
    of the initial params.
    """
    init_rng, state_rng = jax.random.split(rng)
    variables = task.init_variables(init_rng, image_shape)
    if pretrained is not None:
        variables = pretrained_config.replace_subtrees(variables, pretrained)
    params = variables["params"]
    return TrainState.create(
        apply_fn=task.model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        rng=state_rng,
        nonfinite_streak=jnp.zeros((), jnp.int32),
        nonfinite_steps=jnp.zeros((), jnp.int32),
        ema_params=jax.tree.map(jnp.copy, params) if keep_ema else None,
    )


def initial_state(
    config, mesh, schedule: optax.Schedule, load_pretrained: bool = True
) -> TrainState:
    """The freshly initialized train state of `config`, replicated over `mesh`.

    With `load_pretrained` the weights `config.model.pretrained` names (if any) are read on
    the host and replace the initialized backbone; without, every variable is initialized
    (a template to restore a checkpoint into needs no file). The optimizer leaves the
    parameters the model freezes alone (`param_groups.parameter_labels`).
    """
    pretrained = pretrained_config.backbone_variables(config) if load_pretrained else None
    task = tasks.task_for(config)
    image_shape = (config.data.image_size, config.data.image_size, 3)
    rng = jax.random.PRNGKey(config.seed)
    labels = param_groups.parameter_labels(lambda: task.init_variables(rng, image_shape))
    init = functools.partial(
        create_train_state,
        task=task,
        tx=create_optimizer(config, schedule, labels),
        image_shape=image_shape,
        keep_ema=config.ema_decay > 0,
    )
    jitted = jax.jit(init, out_shardings=sharding.replicated(mesh))
    return jitted(rng, pretrained=pretrained)
