"""Config schemas: one section of an experiment config read into a typed, checked dataclass.

A component declares the fields its section may set beside its code::

    @dataclasses.dataclass(frozen=True)
    class UNetConfig:
        features: tuple = schema.field((16, 32, 64), schema.positive_ints)
        norm: str = schema.field("batch", schema.one_of("batch", "group", "none"))

        def check(self, config, path): ...   # optional: rules across fields
        def check_files(self, path): ...     # optional: files it names (validate_config only)

`schema.read(UNetConfig, config.model, "config.model", config)` returns the instance:
fields the section leaves out take their defaults, a field it does not know is an error
suggesting the closest one, and every value passes its field's check. Each check is a
function `(value, path) -> value` raising ConfigError with one line naming `path`.
"""

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

from jaxseg.errors import ConfigError, did_you_mean

Check = Callable[[Any, str], Any]
# The default of a field a section must set.
MISSING = dataclasses.MISSING
# Keys of a section that name the component rather than configure it.
_SELECTOR_KEYS = ("name",)


def field(default: Any, check: Optional[Check] = None) -> Any:
    """A keyword-only dataclass field with `default` (copied per instance if a list or dict;
    `MISSING`: the section must set it) and a `check`."""
    options = {"metadata": {"check": check}, "kw_only": True}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), **options)
    return dataclasses.field(default=default, **options)


def read(schema: type, section: Mapping[str, Any], path: str, config: Any = None) -> Any:
    """The `schema` instance of the config `section` found at `path` ("config.model").

    `config` (the whole experiment config) is passed to the schema's `check(config, path)`
    for rules that span sections.
    """
    known = {f.name: f for f in dataclasses.fields(schema) if f.init}
    for key in section:
        if key not in known and key not in _SELECTOR_KEYS:
            raise ConfigError(
                f"{path}.{key} is not a field of {schema.__name__}{did_you_mean(key, known)}."
            )
    values = {}
    for name, spec in known.items():
        if name not in section:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}.{name} is missing.")
            continue
        check = spec.metadata.get("check")
        values[name] = check(section[name], f"{path}.{name}") if check else section[name]
    instance = schema(**values)
    if hasattr(instance, "check"):
        instance.check(config, path)
    return instance


def read_section(schema: type, config: Any, name: str) -> Any:
    """`read` of the section `config.<name>`, which must exist."""
    if name not in config:
        raise ConfigError(f"config.{name} is missing.")
    return read(schema, config[name], f"config.{name}", config)


def is_number(value: Any) -> bool:
    """Whether `value` is a real int or float (numpy scalars too), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether `value` is a number (`is_number`) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def integer(minimum: int) -> Check:
    """An int >= `minimum` (bools are not ints here)."""

    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{path}={value!r} must be an integer >= {minimum}.")
        return value

    return check


def positive_number(value: Any, path: str) -> float:
    """A number > 0."""
    if not is_number(value) or not value > 0:
        raise ConfigError(f"{path}={value!r} must be a number > 0.")
    return value


def non_negative_number(value: Any, path: str) -> float:
    """A number >= 0."""
    if not is_number(value) or not value >= 0:
        raise ConfigError(f"{path}={value!r} must be a number >= 0.")
    return value


_INTERVALS = {
    "(0, 1]": lambda value: 0.0 < value <= 1.0,
    "[0, 1)": lambda value: 0.0 <= value < 1.0,
    "[0, 1]": lambda value: 0.0 <= value <= 1.0,
}


def fraction(interval: str, note: str = "") -> Check:
    """A number in `interval`: "(0, 1]", "[0, 1)" or "[0, 1]"."""
    inside = _INTERVALS[interval]

    def check(value, path):
        if not is_number(value) or not inside(value):
            raise ConfigError(f"{path}={value!r} must be a number in {interval}{note}.")
        return value

    return check


def boolean(value: Any, path: str) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{path}={value!r} must be True or False.")
    return value


def one_of(*choices: Any) -> Check:
    """One of `choices`."""

    def check(value, path):
        if value not in choices:
            raise ConfigError(f"{path}={value!r} is not one of {', '.join(map(str, choices))}.")
        return value

    return check


def positive_ints(value: Any, path: str) -> tuple[int, ...]:
    """A non-empty tuple (or list) of ints >= 1, as a tuple."""
    if (
        not isinstance(value, (tuple, list))
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ConfigError(f"{path}={value!r} must be a non-empty tuple of positive ints.")
    return tuple(value)


def positive_numbers(value: Any, path: str) -> tuple[float, ...]:
    """A non-empty tuple (or list) of numbers > 0, as a tuple of floats."""
    if not isinstance(value, (tuple, list)) or not value or not all(
        is_number(v) and v > 0 for v in value
    ):
        raise ConfigError(f"{path}={value!r} must be a non-empty tuple of numbers > 0.")
    return tuple(float(v) for v in value)


def optional(inner: Check) -> Check:
    """None, or a value passing `inner`."""

    def check(value, path):
        return None if value is None else inner(value, path)

    return check


def from_module(
    module: type,
    checks: Mapping[str, Check],
    *,
    exclude: tuple[str, ...] = (),
    cross_check: Optional[Callable[[Any, Any, str], None]] = None,
) -> type:
    """A schema whose fields are the constructor fields of the dataclass `module` (a Flax
    module), with the module's types and defaults, minus `exclude` (and Flax's `parent` and
    `name`), each checked by `checks[name]` if given. `cross_check(instance, config, path)`
    becomes the schema's `check`. The module stays the one place that defines defaults."""
    skipped = {"parent", "name", *exclude}
    unknown = set(checks) - {f.name for f in dataclasses.fields(module)}
    if unknown:
        raise ValueError(f"checks name no field of {module.__name__}: {sorted(unknown)}")
    fields = [
        (spec.name, spec.type, field(spec.default, checks.get(spec.name)))
        for spec in dataclasses.fields(module)
        if spec.init and spec.name not in skipped
    ]
    namespace = {"check": lambda self, config, path: cross_check(self, config, path)}
    return dataclasses.make_dataclass(
        f"{module.__name__}Config", fields, frozen=True, namespace=namespace if cross_check else {}
    )


def values(instance: Any) -> dict[str, Any]:
    """The fields of a schema instance as a dict (values not copied)."""
    return {spec.name: getattr(instance, spec.name) for spec in dataclasses.fields(instance)}


DTYPES = ("float32", "bfloat16")


def dtype(value: Any, path: str) -> Any:
    """A computation dtype name of `DTYPES`, as a jnp dtype."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    return jnp.dtype(one_of(*DTYPES)(value, path))


def defaults(schema_class: type) -> dict[str, Any]:
    """`{field: default}` of a schema whose fields all have defaults: the section a config
    file starts from, so that each default is written once, in the schema."""
    return values(schema_class())
