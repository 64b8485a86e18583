"""Weighted sums of the registered losses from a spec ("ce+dice", {"ce": 1, "dice": 0.5}),
and the `config.loss` section that names one."""
import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from jaxseg import registry, schema
from jaxseg.errors import ConfigError
from jaxseg.losses import functions


def parse_loss_spec(spec):
    """Normalises a loss spec to `{name: weight}` (a dict of Python floats).

    Args:
      spec: a string of names joined by "+" (each with weight 1), e.g. "ce+dice", or a
        mapping (dict or ConfigDict) from name to a finite weight >= 0.

    Raises:
      ValueError naming the bad part: unknown or repeated name, empty spec, bad weight.
    """
    if isinstance(spec, str):
        names = [name.strip() for name in spec.split("+")]
        if "" in names:
            raise ValueError(f"loss spec {spec!r} has an empty name; use e.g. 'ce+dice'")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"loss spec {spec!r} repeats {repeated}; use a dict for weights")
        weights = {name: 1.0 for name in names}
    elif hasattr(spec, "items"):
        weights = dict(spec.items())
        if not weights:
            raise ValueError(
                "loss spec dict is empty; give at least one of " + ", ".join(registry.LOSSES.names())
            )
    else:
        raise ValueError(f"loss spec must be a string or a dict, got {type(spec).__name__}")
    for name, weight in weights.items():
        if name not in registry.LOSSES.names():
            raise ValueError(
                f"unknown loss name {name!r}; valid names: {', '.join(registry.LOSSES.names())}"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                math.isfinite(weight) and weight >= 0):
            raise ValueError(f"loss weight for {name!r} must be a finite number >= 0, got {weight!r}")
    return {name: float(weight) for name, weight in weights.items()}


def make_loss_fn(spec, *, ignore_label=255, **options):
    """Builds `fn(logits [N, H, W, K], labels int [N, H, W]) -> (total, components)`.

    `total` is the float32 weighted sum `Σ weight·loss`; `components` maps each chosen
    name to its unweighted float32 value (for logging). Names: "ce" is
    `softmax_cross_entropy`, "dice" is `multiclass_dice_loss`, "focal" is `focal_loss`.

    Args:
      spec: see `parse_loss_spec`, e.g. "ce+dice" or {"ce": 1.0, "dice": 0.5}.
      ignore_label: passed to every loss.
      **options: per-loss settings by name: `gamma`, `alpha` (focal); `smooth`,
        `include_background` (dice). Settings of losses not chosen are accepted and unused.

    Raises:
      ValueError for a bad spec or an unknown option name.
    """
    weights = parse_loss_spec(spec)
    options_of = {
        name: registry.LOSSES.get(name).attributes.get("options", ())
        for name in registry.LOSSES.names()
    }
    known_options = {option for names in options_of.values() for option in names}
    unknown = sorted(set(options) - known_options)
    if unknown:
        raise ValueError(f"unknown loss options {unknown}; valid options: {', '.join(sorted(known_options))}")

    def settings(name):
        return {key: options[key] for key in options_of[name] if key in options}

    chosen = {name: (registry.LOSSES.get(name).target, settings(name)) for name in weights}
    if "focal" in chosen:
        functions.check_gamma(chosen["focal"][1].get("gamma", 2.0))
        functions.check_focal_alpha(chosen["focal"][1].get("alpha"))
    if "dice" in chosen:
        functions.check_smooth(chosen["dice"][1].get("smooth", 1.0))

    def loss_fn(logits, labels):
        components = {
            name: loss(logits, labels, ignore_label=ignore_label, **kwargs)
            for name, (loss, kwargs) in chosen.items()
        }
        total = sum(weights[name] * value for name, value in components.items())
        return jnp.asarray(total, jnp.float32), components

    return loss_fn


def _loss_spec(value: Any, path: str) -> Any:
    try:
        parse_loss_spec(value)
    except ValueError as error:
        raise ConfigError(f"{path}={value!r}: {error}") from None
    return value


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The `config.loss` section of a semantic experiment.

    Attributes:
      name: a loss spec (`parse_loss_spec`): registered names joined by "+", or a dict of
        name -> weight.
      ignore_label: label of pixels no loss counts; must not be a class id.
    """

    name: Any = schema.field(schema.MISSING, _loss_spec)
    ignore_label: int = schema.field(schema.MISSING, schema.integer(0))

    def check(self, config: Any, path: str) -> None:
        num_classes = config.data.num_classes
        if self.ignore_label < num_classes:
            raise ConfigError(
                f"{path}.ignore_label={self.ignore_label} collides with a class id "
                f"(config.data.num_classes={num_classes})."
            )
