"""Registries and config schemas: lookup by name, one-line errors, defaults, new components."""

import dataclasses

import flax.linen as nn
import ml_collections
import numpy as np
import pytest

from jaxseg import losses, registry, schema, tasks
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError
from jaxseg.models.factory import create_model, register_model
from tests.test_config import load_config_file


def test_shipped_components_are_registered():
    assert {"unet", "deeplabv3plus", "resnet_unet", "mask_rcnn", "panoptic_fpn"} <= set(
        registry.MODELS.names()
    )
    assert registry.TASKS.names() == ("instance", "panoptic", "semantic")
    assert registry.LOSSES.names() == ("ce", "dice", "focal")
    for name in ("unet", "deeplabv3plus", "resnet_unet"):
        assert registry.MODELS.get(name).task == "semantic"
    assert registry.MODELS.get("mask_rcnn").task == "instance"
    assert registry.MODELS.get("panoptic_fpn").task == "panoptic"


def test_unknown_name_is_one_line_listing_the_registered_ones():
    config = load_config_file("unet_shapes.py")
    config.model.name = "unte"
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    message = str(error.value)
    assert message.startswith("config.model.name='unte' is not a registered model (did you mean")
    assert "'mask_rcnn'" in message and "'unet'" in message and "\n" not in message


def test_a_name_registered_twice_is_refused():
    kinds = registry.Registry("thing", "config.thing", ())
    kinds.register("a")(int)
    kinds.register("a")(int)
    with pytest.raises(ValueError, match="Two things are registered as 'a'"):
        kinds.register("a")(float)


@dataclasses.dataclass(frozen=True)
class _Section:
    width: int = schema.field(3, schema.integer(1))
    depth: int = schema.field(schema.MISSING, schema.integer(0))
    names: list = schema.field(["x"])

    def check(self, config, path):
        if self.width > 2 * self.depth + 3:
            raise ConfigError(f"{path}.width={self.width} is wider than {path}.depth allows.")


def test_schema_defaults_checks_and_cross_field_rules():
    read = schema.read(_Section, {"depth": 2, "name": "ignored selector"}, "config.part")
    assert (read.width, read.depth, read.names) == (3, 2, ["x"])
    assert schema.read(_Section, {"depth": 1}, "config.part").names is not read.names
    cases = [
        ({"depth": 2, "widht": 4}, "config.part.widht is not a field of _Section (did you mean 'width'?)."),
        ({}, "config.part.depth is missing."),
        ({"depth": 2, "width": 0}, "config.part.width=0 must be an integer >= 1."),
        ({"depth": 0, "width": 4}, "config.part.width=4 is wider than config.part.depth allows."),
    ]
    for section, message in cases:
        with pytest.raises(ConfigError) as error:
            schema.read(_Section, section, "config.part")
        assert str(error.value) == message


def test_module_schema_takes_the_module_defaults():
    unet_schema = registry.MODELS.get("unet").schema
    defaults = schema.read(unet_schema, {}, "config.model", load_config_file("unet_shapes.py"))
    assert defaults.features == (64, 128, 256, 512, 1024) and defaults.norm == "batch"
    assert "num_classes" not in {f.name for f in dataclasses.fields(unet_schema)}


class _Constant(nn.Module):
    """A toy semantic model: the same logits `[N, H, W, K]` at every pixel."""

    num_classes: int
    scale: float = 1.0

    @nn.compact
    def __call__(self, images, train):
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        return self.scale * bias * (images[..., :1] * 0 + 1)


_ConstantConfig = schema.from_module(_Constant, {"scale": schema.positive_number}, exclude=("num_classes",))


def _isolated(monkeypatch, kinds: registry.Registry) -> None:
    """Entries registered by the test are gone after it."""
    kinds.names()
    monkeypatch.setattr(kinds, "_entries", dict(kinds._entries))


def test_a_model_registered_outside_the_core_validates_builds_and_gets_its_task(monkeypatch):
    _isolated(monkeypatch, registry.MODELS)
    register_model("constant_for_test", _Constant, _ConstantConfig, task="semantic")
    config = load_config_file("unet_shapes.py")
    config.model = ml_collections.ConfigDict({"name": "constant_for_test", "scale": 2.0})
    validate_config(config)
    model = create_model(config)
    assert isinstance(model, _Constant) and model.scale == 2.0 and model.num_classes == 4
    assert isinstance(tasks.task_for(config), tasks.SemanticSegmentation)
    config.model.scale = -1.0
    with pytest.raises(ConfigError, match=r"config.model.scale=-1.0 must be a number > 0."):
        validate_config(config)


def test_a_loss_registered_outside_the_core_is_summed_by_name(monkeypatch):
    _isolated(monkeypatch, registry.LOSSES)

    @registry.LOSSES.register("mean_logit")
    def mean_logit(logits, labels, ignore_label=255):
        del labels, ignore_label
        return logits.mean()

    logits = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) / 10
    labels = np.zeros((1, 2, 3), np.int32)
    total, components = losses.make_loss_fn("ce+mean_logit")(logits, labels)
    expected_ce = float(losses.softmax_cross_entropy(logits, labels))
    np.testing.assert_allclose(float(components["mean_logit"]), 1.15, rtol=1e-6)
    np.testing.assert_allclose(float(total), expected_ce + 1.15, rtol=1e-6)
