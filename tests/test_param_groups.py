"""Frozen, norm and decayed parameters: the labels the models give, and the optimizer's
updates against hand-computed SGD and optax's AdamW; frozen stages stay put in training."""

import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import unet_shapes
from jaxseg import sharding, train
from jaxseg.models.resnet import build_resnet
from jaxseg.training import optim, param_groups
from jaxseg.training.param_groups import DECAYED, FROZEN, NORM
from tests.test_train_mask_rcnn import tiny_mask_rcnn_config
from tests.test_train import first_train_steps


def _resnet_labels(**options):
    model = build_resnet("resnet18", num_filters=8, **options)
    images = jnp.zeros((1, 32, 32, 3))
    labels = param_groups.parameter_labels(
        lambda: model.init(jax.random.key(0), images, train=False)
    )
    return flax.traverse_util.flatten_dict(labels)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 4])
def test_resnet_labels_freeze_the_stem_and_stages_up_to_freeze_at(freeze_at):
    labels = _resnet_labels(norm="group", freeze_at=freeze_at)
    assert len(labels) == 3 * (1 + 16 + 3)  # (kernel, scale, bias) x (stem, 8 x 2 convs, 3 projections)
    for path, label in labels.items():
        block = path[0]
        stage = 1 if block == "stem" else int(block[3])
        if stage <= freeze_at:
            expected = FROZEN
        elif path[-2] == "norm":
            expected = NORM
        else:
            expected = DECAYED
        assert label == expected, path


def test_frozen_batch_norm_scale_and_bias_are_frozen_and_convs_decay():
    labels = _resnet_labels(norm="frozen_batch")
    norm_paths = [path for path in labels if path[-1] in ("scale", "bias")]
    assert len(norm_paths) == 2 * (1 + 16 + 3)
    assert {labels[path] for path in norm_paths} == {FROZEN}
    assert {label for path, label in labels.items() if path[-1] == "kernel"} == {DECAYED}


def _sgd_config(**optimizer):
    config = unet_shapes.get_config()
    config.learning_rate, config.optimizer.warmup_steps = 0.1, 0
    config.optimizer.schedule = "constant"
    config.optimizer.update(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.01, grad_clip_norm=None)
    config.optimizer.update(**optimizer)
    return config


LABELS = {"stem": {"kernel": FROZEN}, "norm": {"scale": NORM}, "conv": {"kernel": DECAYED}}


def _run(tx, grads_of, steps=3):
    params = {"stem": {"kernel": np.float32(1.0)}, "norm": {"scale": np.float32(2.0)}, "conv": {"kernel": np.float32(-3.0)}}
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads_of(params), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return jax.tree.map(float, params), state


@pytest.mark.parametrize("decay_norms", [True, False])
def test_sgd_leaves_frozen_parameters_and_decays_only_the_decayed_ones(decay_norms):
    """f(w) = w²/2 per parameter (gradient w): heavy-ball SGD with weight decay wd on the
    gradient, by hand; the frozen one keeps its value although its gradient is not zero."""
    config = _sgd_config(decay_norms=decay_norms)
    tx = optim.create_optimizer(config, train.create_learning_rate_schedule(config), LABELS)
    params, state = _run(tx, lambda p: p)

    def reference(w, wd):
        velocity = 0.0
        for _ in range(3):
            velocity = 0.9 * velocity + w + wd * w
            w -= 0.1 * velocity
        return w

    assert params["stem"]["kernel"] == 1.0
    np.testing.assert_allclose(params["norm"]["scale"], reference(2.0, 0.01 if decay_norms else 0.0), rtol=1e-6)
    np.testing.assert_allclose(params["conv"]["kernel"], reference(-3.0, 0.01), rtol=1e-6)
    momentum = [leaf for leaf in jax.tree.leaves(state) if np.ndim(leaf) == 0 and leaf.dtype == np.float32]
    assert len(momentum) == 2, "the frozen parameter must hold no momentum"


def test_adamw_with_clipping_matches_numpy_adamw_on_the_trained_parameters():
    """f(w) = w⁴/4 (gradient w³), clipped to global norm 1 over the trained parameters, then
    Adam with bias correction and decoupled decay on the decayed one only (decay_norms off)."""
    config = _sgd_config(name="adamw", weight_decay=0.05, decay_norms=False, grad_clip_norm=1.0)
    tx = optim.create_optimizer(config, train.create_learning_rate_schedule(config), LABELS)
    params, _ = _run(tx, lambda p: jax.tree.map(lambda w: w**3, p))

    w = np.array([2.0, -3.0])  # norm scale, conv kernel
    decay = np.array([0.0, 0.05])
    mu, nu = np.zeros(2), np.zeros(2)
    for t in range(1, 4):
        g = w**3
        g = g * min(1.0, 1.0 / np.linalg.norm(g))
        mu, nu = 0.9 * mu + 0.1 * g, 0.999 * nu + 0.001 * g**2
        step = (mu / (1 - 0.9**t)) / (np.sqrt(nu / (1 - 0.999**t)) + 1e-8)
        w = w - 0.1 * (step + decay * w)
    assert params["stem"]["kernel"] == 1.0
    np.testing.assert_allclose([params["norm"]["scale"], params["conv"]["kernel"]], w, rtol=1e-5)


@pytest.mark.slow
def test_training_leaves_frozen_stages_and_frozen_norms_bit_identical(tmp_path):
    """Mask R-CNN with FrozenBatchNorm and freeze_at=2, SGD with weight decay: after three
    steps the stem, res2 and every FrozenBatchNorm affine are unchanged; res3 has moved."""
    config = tiny_mask_rcnn_config(str(tmp_path), model__backbone_norm="frozen_batch", model__freeze_at=2)
    config.optimizer.update(name="sgd", weight_decay=0.1)
    mesh = sharding.create_mesh()
    schedule = train.create_learning_rate_schedule(config)
    initial = jax.tree.map(np.asarray, train.initial_state(config, mesh, schedule).params)
    _, state = first_train_steps(train.CompiledSteps(config, mesh, schedule), config, mesh, schedule, 3)
    before = flax.traverse_util.flatten_dict(initial)
    after = flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, state.params))
    frozen = 0
    for path, value in before.items():
        block = next((part for part in path if part == "stem" or re.fullmatch(r"res\d_\d+", part)), None)
        if block is not None and (block == "stem" or block.startswith("res2_") or path[-2] == "norm"):
            np.testing.assert_array_equal(after[path], value, err_msg=str(path))
            frozen += 1
    # ResNet-18: the stem's 3 and res2's 2 x 2 x 3 params, and res3..res5's norms (6 blocks
    # x 2 convs + 3 projections, scale and bias).
    assert frozen == 3 + 12 + 15 * 2
    moved = [path for path in before if "res3_0" in path and path[-1] == "kernel"]
    assert moved and all(np.abs(after[path] - before[path]).max() > 0 for path in moved)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_without_frozen_or_undecayed_parameters_the_state_is_that_of_earlier_versions(name):
    """Earlier runs' checkpoints restore: clipping + optax's adamw / (decay + sgd), and a
    config.json written before `decay_norms` existed reads it as True."""
    config = _sgd_config(name=name, grad_clip_norm=1.0)
    del config.optimizer["decay_norms"]
    schedule = train.create_learning_rate_schedule(config)
    labels = {"norm": {"scale": NORM}, "conv": {"kernel": DECAYED}}
    params = {"norm": {"scale": np.ones(3, np.float32)}, "conv": {"kernel": np.ones(2, np.float32)}}
    ours = optim.create_optimizer(config, schedule, labels).init(params)
    decayed = optax.add_decayed_weights(0.01)
    update = (
        optax.adamw(schedule, weight_decay=0.01)
        if name == "adamw"
        else optax.chain(decayed, optax.sgd(schedule, momentum=0.9, nesterov=False))
    )
    earlier = optax.chain(optax.clip_by_global_norm(1.0), update).init(params)
    assert jax.tree.structure(ours) == jax.tree.structure(earlier)
