"""Components registered under a name where they are defined: models, tasks, losses.

A component module registers itself with a decorator::

    from jaxseg import registry

    @registry.MODELS.register("unet", task="semantic", schema=UNetConfig)
    def build_unet(config): ...

and the core looks it up by the name a config gives (`registry.MODELS.get(
config.model.name)`). A registry imports every module of its packages before its first
look-up, so a new component is a new file in one of them: nothing else is edited.
An unknown name is a ConfigError listing the registered ones.
"""

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Iterator

from jaxseg.errors import ConfigError, did_you_mean


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered component: its name, the object registered and its attributes."""

    name: str
    target: Any
    attributes: dict

    def __getattr__(self, attribute: str) -> Any:
        try:
            return self.__dict__["attributes"][attribute]
        except KeyError:
            raise AttributeError(attribute) from None


class Registry:
    """Name -> component, filled by the modules of `packages` as they are imported.

    Args:
      kind: what the entries are, for messages ("model").
      field: the config field that names one ("config.model.name").
      packages: dotted names of packages (every submodule is imported) or modules.
    """

    def __init__(self, kind: str, field: str, packages: tuple[str, ...]):
        self.kind = kind
        self.field = field
        self._packages = packages
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    def register(self, name: str, **attributes) -> Callable[[Any], Any]:
        """A decorator registering its target under `name`, with `attributes`."""

        def decorate(target: Any) -> Any:
            if name in self._entries and self._entries[name].target is not target:
                raise ValueError(f"Two {self.kind}s are registered as {name!r}.")
            self._entries[name] = Entry(name, target, dict(attributes))
            return target

        return decorate

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for package in self._packages:
            for module in _modules(package):
                importlib.import_module(module)

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        self._discover()
        return tuple(sorted(self._entries))

    def get(self, name: Any) -> Entry:
        """The entry registered as `name`; ConfigError naming the choices if there is none."""
        self._discover()
        if name not in self._entries:
            listed = ", ".join(repr(known) for known in self.names())
            hint = did_you_mean(name, self._entries) if isinstance(name, str) else ""
            raise ConfigError(
                f"{self.field}={name!r} is not a registered {self.kind}{hint}: {listed}."
            )
        return self._entries[name]


def _modules(package: str) -> Iterator[str]:
    """`package` itself, and every module below it when it is a package."""
    yield package
    module = importlib.import_module(package)
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            yield info.name


MODELS = Registry("model", "config.model.name", ("jaxseg.models",))
TASKS = Registry("task", "the model's task", ("jaxseg.tasks",))
LOSSES = Registry("loss", "config.loss.name", ("jaxseg.losses",))
DATASETS = Registry("dataset", "config.data.name", ("jaxseg.data.sources",))
