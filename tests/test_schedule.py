"""Learning-rate schedules against values computed by hand from their definitions."""

import math

import numpy as np
import pytest

from configs import mask_rcnn_coco, unet_shapes
from jaxseg import train
from jaxseg.config_validation import ConfigError, validate_config
from jaxseg.training import optim


def _schedule(**optimizer):
    config = unet_shapes.get_config()
    config.learning_rate = 0.02
    config.num_train_steps = 100
    for name, value in optimizer.items():
        config.optimizer[name] = value
    return train.create_learning_rate_schedule(config)


def _values(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_steps_schedule_decays_at_each_boundary_from_that_step_on():
    schedule = _schedule(schedule="steps", warmup_steps=10, decay_steps=(60, 80), decay_factor=0.1)
    steps = [0, 5, 10, 11, 59, 60, 61, 79, 80, 100]
    expected = [0.0, 0.01, 0.02, 0.02, 0.02, 0.002, 0.002, 0.002, 0.0002, 0.0002]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6, atol=1e-12)


def test_steps_schedule_without_warmup_starts_at_the_full_rate():
    schedule = _schedule(schedule="steps", warmup_steps=0, decay_steps=(50,), decay_factor=0.5)
    np.testing.assert_allclose(_values(schedule, [0, 49, 50, 99]), [0.02, 0.02, 0.01, 0.01])


def test_cosine_schedule_follows_half_a_cosine_after_warmup():
    schedule = _schedule(schedule="cosine", warmup_steps=20)
    steps = [0, 10, 20, 60, 100]
    expected = [0.0, 0.01] + [
        0.01 * (1 + math.cos(math.pi * (step - 20) / 80)) for step in (20, 60, 100)
    ]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6, atol=1e-9)


def test_constant_schedule_after_warmup():
    schedule = _schedule(schedule="constant", warmup_steps=4)
    np.testing.assert_allclose(_values(schedule, [0, 2, 4, 99]), [0.0, 0.01, 0.02, 0.02])


def test_coco_config_uses_the_1x_step_decay():
    config = mask_rcnn_coco.get_config()
    schedule = train.create_learning_rate_schedule(config)
    np.testing.assert_allclose(
        _values(schedule, [500, 1000, 59999, 60000, 80000, 90000]),
        [0.01, 0.02, 0.02, 0.002, 0.0002, 0.0002],
        rtol=1e-6,
    )


@pytest.mark.parametrize("steps", [(), (80, 60), (5,), (60, 101), (60.0,)])
def test_steps_schedule_rejects_bad_decay_steps(steps):
    config = unet_shapes.get_config()
    config.num_train_steps = 100
    config.optimizer.warmup_steps = 10
    config.optimizer.schedule = "steps"
    config.optimizer.decay_steps = steps
    with pytest.raises(ConfigError, match="config.optimizer.decay_steps"):
        validate_config(config)


def test_decay_steps_with_another_schedule_are_an_error():
    config = unet_shapes.get_config()
    config.optimizer.decay_steps = (500,)
    with pytest.raises(ConfigError, match="only apply to config.optimizer.schedule='steps'"):
        validate_config(config)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_momentum_updates_match_the_hand_computed_ones(nesterov):
    """Two steps on f(w) = w²/2 (gradient w), no warmup, no weight decay, no clipping.

    Heavy ball: v1 = g1, v2 = m v1 + g2, update -lr v. Nesterov: update -lr (g + m v).
    """
    config = unet_shapes.get_config()
    config.learning_rate, config.optimizer.warmup_steps = 0.1, 0
    config.optimizer.schedule = "constant"
    config.optimizer.update(name="sgd", momentum=0.9, weight_decay=0.0, grad_clip_norm=None)
    config.optimizer.nesterov = nesterov
    tx = optim.create_optimizer(config, train.create_learning_rate_schedule(config))
    lr, m, w = 0.1, 0.9, 1.0
    params = {"w": np.float32(w)}
    state = tx.init(params)
    velocity = 0.0
    for _ in range(2):
        grad = w
        velocity = m * velocity + grad
        w -= lr * (grad + m * velocity if nesterov else velocity)
        updates, state = tx.update({"w": params["w"]}, state, params)
        params = {"w": params["w"] + updates["w"]}
        np.testing.assert_allclose(float(params["w"]), w, rtol=1e-6)
