"""Which parameters the optimizer updates, and which it decays: a label per parameter.

Labels come from the model's modules, found by running its initialization abstractly
(`jax.eval_shape`, nothing computed) under `flax.linen.intercept_methods`:

- FROZEN: under a submodule a module names in its `frozen_children()` (a ResNet's stem and
  stages up to `freeze_at`, detectron2's FREEZE_AT), or a `FrozenBatchNorm`'s scale and
  bias (detectron2's FrozenBatchNorm2d keeps its affine fixed too). No update, no decay.
- NORM: the scale and bias of a normalization layer (BatchNorm, GroupNorm, LayerNorm), which
  detectron2 does not decay (WEIGHT_DECAY_NORM = 0).
- DECAYED: every other parameter (kernels and biases of convs and dense layers).
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax

from jaxseg.models.norms import FrozenBatchNorm

FROZEN = "frozen"
NORM = "norm"
DECAYED = "decayed"

NORM_MODULES = (nn.BatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_labels(init_variables: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The label (FROZEN, NORM or DECAYED) of every leaf of `init_variables()["params"]`.

    `init_variables` initializes the model (e.g. `lambda: task.init_variables(rng, shape)`);
    it is traced once, abstractly. Returns a tree of strings with the params' structure.
    """
    frozen, norms = set(), set()

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":  # e.g. `frozen_children` itself
            return next_fun(*args, **kwargs)
        module = context.module
        path = tuple(module.path)
        if isinstance(module, FrozenBatchNorm):
            frozen.add(path)
        elif isinstance(module, NORM_MODULES):
            norms.add(path)
        frozen_children = getattr(module, "frozen_children", None)
        if callable(frozen_children):
            frozen.update(path + (child,) for child in frozen_children())
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(init_variables)["params"]

    def label(path: tuple[str, ...]) -> str:
        owners = {path[:length] for length in range(len(path))}
        if owners & frozen:
            return FROZEN
        return NORM if path[:-1] in norms else DECAYED

    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes))
    return flax.traverse_util.unflatten_dict({path: label(path) for path in flat})


def mask_of(labels: Any, *wanted: str) -> Any:
    """A tree of bools, True where the label is one of `wanted` (an optax mask)."""
    return jax.tree.map(lambda label: label in wanted, labels)

