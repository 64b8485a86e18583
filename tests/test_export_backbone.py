"""A trained run's backbone exported (`jaxseg.export_backbone`) and loaded into another model
through `config.model.pretrained`, at the run's own width and GroupNorm."""

import os

import flax
import jax
import numpy as np
import pytest

from configs import unet_shapes
from jaxseg import export_backbone, sharding, train, trained_run
from jaxseg.config_validation import validate_config
from jaxseg.errors import ConfigError
from jaxseg.models import pretrained
from jaxseg.training.state import initial_state
from tests.test_train_mask_rcnn import tiny_mask_rcnn_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_mask_rcnn_run, tmp_path_factory):
    """The shared tiny Mask R-CNN run (resnet18, width 8, GroupNorm; tests/conftest.py)
    and its exported backbone."""
    config, workdir, _, _ = tiny_mask_rcnn_run
    output = str(tmp_path_factory.mktemp("export") / "backbone.safetensors")
    summary = export_backbone.export_backbone(workdir, output)
    return config, workdir, output, summary


def test_export_writes_the_trained_backbone(run):
    config, workdir, output, summary = run
    step = config.num_train_steps
    assert summary == f"Wrote the resnet18 (width 8) backbone of step {step} to {output}."
    _, state = trained_run.load_trained_state(workdir)
    loaded = pretrained.load_resnet_variables(output, "resnet18", width=8, norm="group")
    assert set(loaded) == {"params"}  # GroupNorm keeps no statistics
    expected = flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, state.params["resnet"]))
    got = flax.traverse_util.flatten_dict(loaded["params"])
    assert got.keys() == expected.keys() and len(got) == 60
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))


def test_the_exported_backbone_initializes_a_new_model(run):
    config, workdir, output, _ = run
    fine_tune = tiny_mask_rcnn_config(config.data.data_dir, seed=7)
    fine_tune.model.pretrained = output
    validate_config(fine_tune)
    mesh = sharding.create_mesh(jax.devices()[:1])
    state = initial_state(fine_tune, mesh, train.create_learning_rate_schedule(fine_tune))
    _, trained = trained_run.load_trained_state(workdir)
    np.testing.assert_array_equal(
        np.asarray(state.params["resnet"]["res4_1"]["conv2"]["conv"]["kernel"]),
        np.asarray(trained.params["resnet"]["res4_1"]["conv2"]["conv"]["kernel"]),
    )
    fresh = initial_state(tiny_mask_rcnn_config(config.data.data_dir, seed=7), mesh,
                          train.create_learning_rate_schedule(fine_tune))
    # The rest keeps the new run's own initialization.
    for name in ("fpn", "rpn_head", "box_head", "mask_head"):
        jax.tree.map(np.testing.assert_array_equal, state.params[name], fresh.params[name])


def test_another_width_or_norm_is_an_error_naming_the_field(run):
    config, _, output, _ = run
    wider = tiny_mask_rcnn_config(config.data.data_dir, model__backbone_width=16)
    wider.model.pretrained = output
    with pytest.raises(ConfigError, match=r"^config.model.pretrained=.*arrays of the wrong shape"):
        validate_config(wider)


def test_bad_runs_and_outputs_stop_with_one_line(run, tmp_path):
    _, workdir, _, _ = run
    with pytest.raises(trained_run.RunError, match="^--output=.*must be a .safetensors file"):
        export_backbone.export_backbone(workdir, str(tmp_path / "backbone.npz"))
    config = unet_shapes.get_config()
    with pytest.raises(trained_run.RunError, match="the unet model has no ResNet backbone"):
        export_backbone.backbone_of(config, {"params": {}})
    with pytest.raises(trained_run.RunError, match="^--workdir"):
        export_backbone.export_backbone(str(tmp_path), str(tmp_path / "b.safetensors"))
    assert not os.path.exists(tmp_path / "b.safetensors")
