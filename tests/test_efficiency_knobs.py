"""Efficiency knobs: bfloat16 compute, gradient accumulation, EMA params, rematerialization."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses, sharding, train
from jaxseg.config_validation import ConfigError
from jaxseg.data import batching, pipeline
from jaxseg.models.factory import create_model
from jaxseg.models.resnet import build_resnet
from jaxseg.ops.flat_key import flat_key
from jaxseg.tasks import SemanticSegmentation
from jaxseg.training.state import eval_params
from tests.test_train import tiny_config

SGD_CONSTANT = {
    "optimizer__name": "sgd",
    "optimizer__schedule": "constant",
    "optimizer__warmup_steps": 0,
    "learning_rate": 0.1,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _setup(config, num_devices=1):
    mesh = sharding.create_mesh(jax.devices()[:num_devices])
    schedule = train.create_learning_rate_schedule(config)
    state = train.initial_state(config, mesh, schedule)
    return mesh, state, train.CompiledSteps(config, mesh, schedule)


def _train_batches(config):
    source = pipeline.load_split(config.data, "train")
    for batch in batching.train_batches(
        source, config.batch_size, config.seed, max_instances=config.data.max_instances
    ):
        yield {name: batch[name] for name in SemanticSegmentation.train_fields}


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def _train(config, num_steps, num_devices=1):
    mesh, state, steps = _setup(config, num_devices)
    batches = _train_batches(config)
    for _ in range(num_steps):
        state, step_metrics = steps.train(state, sharding.shard_batch(next(batches), mesh))
    return mesh, state, steps, step_metrics


def test_bfloat16_training_matches_float32_metric_and_keeps_float32_state(data_dir):
    """150 steps from the same seed in float32 and bfloat16: pixel accuracy within 0.01.

    Measured on the 24 training images the model fits (validation accuracy of so
    small a run is that of predicting all background, which would prove nothing).
    """
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_config(
            data_dir,
            num_train_steps=150,
            model__dtype=dtype,
            model__features=(16, 32),
            optimizer__schedule="constant",
            optimizer__warmup_steps=5,
        )
        mesh, state, steps, step_metrics = _train(config, 150)
        source = pipeline.load_split(config.data, "train")
        metrics, _ = train.evaluate(steps, state, source, config, mesh)
        for leaf in jax.tree.leaves((state.params, state.opt_state, state.batch_stats)):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32, (dtype, leaf.dtype)
        assert step_metrics["loss"].dtype == jnp.float32
        results[dtype] = (metrics, _host(state.params))
    f32, bf16 = results["float32"][0], results["bfloat16"][0]
    assert f32["pixel_accuracy"] > 0.98 and f32["miou"] > 0.8, f32
    assert abs(bf16["pixel_accuracy"] - f32["pixel_accuracy"]) <= 0.01, (f32, bf16)
    # bf16 compute really happened: the trained params are not those of float32.
    differs = jax.tree.map(
        lambda a, b: not np.allclose(a, b, atol=1e-6), results["float32"][1], results["bfloat16"][1]
    )
    assert any(jax.tree.leaves(differs))


def test_two_micro_batches_equal_one_full_batch_step(data_dir):
    """k=2 on batch 8 vs k=1 on batch 8 (4-device mesh): loss and params agree to 1e-5.

    Cross-entropy is a per-pixel mean, so the mean over equal micro-batches is the
    full-batch mean. With BatchNorm the two differ by definition (each
    micro-batch is normalized with its own statistics), hence group norm.
    """
    finals = []
    for steps_per_update in (1, 2):
        config = tiny_config(
            data_dir,
            model__norm="group",
            loss__name="ce",
            grad_accumulation_steps=steps_per_update,
            **SGD_CONSTANT,
        )
        _, state, _, step_metrics = _train(config, 1, num_devices=4)
        finals.append(_host((step_metrics["loss"], step_metrics["grad_norm"], state.params)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), *finals)
    initial = _host(_setup(config)[1].params)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), finals[1][2], initial)
    assert max(jax.tree.leaves(moved)) > 1e-3


def test_batch_norm_running_averages_update_once_per_micro_batch(data_dir):
    """With BatchNorm, k micro-batches apply k momentum updates, in order, to the running stats."""
    config = tiny_config(data_dir, grad_accumulation_steps=2, **SGD_CONSTANT)
    mesh, state, steps = _setup(config)
    batch = next(_train_batches(config))
    before = _host(state.batch_stats)
    # The first layer's pre-norm activations depend only on its kernel, fixed within a step.
    kernel = np.asarray(state.params["down0"]["conv0"]["conv"]["kernel"], np.float64)
    state, _ = steps.train(state, sharding.shard_batch(batch, mesh))
    after = _host(state.batch_stats)
    for_layer = before["down0"]["conv0"]["norm"]
    mean, var = for_layer["mean"], for_layer["var"]
    for micro in (0, 1):
        images = batching.unit_range(batch["image"][micro::2]).astype(np.float64)
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
        h, w = images.shape[1:3]
        patches = np.stack(
            [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=3
        )
        conv = np.einsum("nhwkc,kcf->nhwf", patches, kernel.reshape(9, 3, -1))
        mean = 0.9 * mean + 0.1 * conv.mean(axis=(0, 1, 2))
        var = 0.9 * var + 0.1 * conv.var(axis=(0, 1, 2))
    np.testing.assert_allclose(after["down0"]["conv0"]["norm"]["mean"], mean, atol=1e-5)
    np.testing.assert_allclose(after["down0"]["conv0"]["norm"]["var"], var, atol=1e-5)


def test_accumulation_must_divide_batch_per_device(data_dir):
    config = tiny_config(data_dir, grad_accumulation_steps=2)
    train.check_accumulation(config, 4)
    with pytest.raises(ConfigError, match=r"^config\.grad_accumulation_steps=2: .*2 x 8"):
        train.check_accumulation(config, 8)


def test_ema_follows_numpy_recurrence_and_skips_nonfinite_steps(data_dir):
    decay = 0.6
    config = tiny_config(data_dir, ema_decay=decay, **SGD_CONSTANT)
    mesh, state, steps = _setup(config)
    ema = _host(state.params)
    jax.tree.map(np.testing.assert_array_equal, _host(state.ema_params), ema)
    batches = _train_batches(config)
    for _ in range(3):
        state, _ = steps.train(state, sharding.shard_batch(next(batches), mesh))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, _host(state.params))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        _host(state.ema_params),
        ema,
    )
    assert not np.allclose(
        _host(state.ema_params)["head"]["kernel"], _host(state.params)["head"]["kernel"]
    )
    before_skip = _host(state.ema_params)
    poisoned = dict(next(batches))
    poisoned["image"] = np.full(poisoned["image"].shape, np.nan, np.float32)
    state, _ = steps.train(state, sharding.shard_batch(poisoned, mesh))
    jax.tree.map(np.testing.assert_array_equal, _host(state.ema_params), before_skip)


def test_ema_off_keeps_no_copy(data_dir):
    _, state, _ = _setup(tiny_config(data_dir))
    assert state.ema_params is None
    assert eval_params(state) is state.params


def test_evaluation_uses_the_ema_params(data_dir):
    config = tiny_config(data_dir, ema_decay=0.9)
    mesh, state, steps = _setup(config)
    # EMA params whose head always votes class 2; the trained params do not.
    ema = jax.tree.map(jnp.copy, state.params)
    ema["head"]["bias"] = jnp.array([0.0, 0.0, 100.0, 0.0])
    state = state.replace(ema_params=ema)
    val = pipeline.load_split(config.data, "validation")
    batch = next(batching.eval_batches(val, 8, max_instances=config.data.max_instances))
    _, predictions = steps.eval(state, sharding.shard_batch(
        {name: batch[name] for name in SemanticSegmentation.eval_fields}, mesh
    ))
    np.testing.assert_array_equal(np.asarray(predictions), 2)
    metrics, _ = train.evaluate(steps, state, val, config, mesh)
    truth = np.concatenate([val[i]["semantic"].ravel() for i in range(len(val))])
    assert metrics["pixel_accuracy"] == pytest.approx(np.mean(truth == 2), abs=1e-6)
    raw = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats},
        batching.unit_range(batch["image"]),
        train=False,
    )
    assert np.any(np.asarray(raw).argmax(-1) != 2)


def _loss_and_grads(model, variables, images, labels):
    def loss(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return losses.softmax_cross_entropy(logits, labels)

    return jax.jit(jax.value_and_grad(loss))(variables["params"]), jax.make_jaxpr(jax.grad(loss))(
        variables["params"]
    )


def _primitive_names(jaxpr) -> set[str]:
    names = set()
    for equation in jaxpr.eqns:
        names.add(equation.primitive.name)
        for param in equation.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    names |= _primitive_names(getattr(inner, "jaxpr", inner))
    return names


def _has_checkpoint(jaxpr) -> bool:
    return any(name.startswith(("remat", "checkpoint")) for name in _primitive_names(jaxpr))


def test_remat_gives_the_same_loss_and_gradients_and_is_used(data_dir):
    config = tiny_config(data_dir)
    plain = create_model(config)
    config.model.remat = True
    remat = create_model(config)
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
    labels = jax.random.randint(jax.random.PRNGKey(2), (2, 32, 32), 0, 4)
    variables = plain.init(flat_key(jax.random.PRNGKey(0)), images, train=False)
    remat_variables = remat.init(flat_key(jax.random.PRNGKey(0)), images, train=False)
    assert jax.tree.structure(remat_variables) == jax.tree.structure(variables)
    (plain_loss, plain_grads), plain_jaxpr = _loss_and_grads(plain, variables, images, labels)
    (remat_loss, remat_grads), remat_jaxpr = _loss_and_grads(remat, variables, images, labels)
    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6)
    jax.tree.map(close, remat_grads, plain_grads)
    # jax.checkpoint's primitive is `remat2` in this JAX (`checkpoint` in some versions).
    assert _has_checkpoint(remat_jaxpr.jaxpr)
    assert not _has_checkpoint(plain_jaxpr.jaxpr)


def test_resnet_remat_gives_the_same_features_and_gradients_and_is_used():
    """The Mask R-CNN backbone's `remat` (config.model.remat) changes memory, not numbers."""
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
    plain = build_resnet("resnet18", num_filters=8, norm="group")
    remat = build_resnet("resnet18", num_filters=8, norm="group", remat=True)
    params = plain.init(flat_key(jax.random.PRNGKey(0)), images, train=False)["params"]
    results = []
    for model in (plain, remat):

        def loss(p, model=model):
            features = model.apply({"params": p}, images, train=True)
            return sum(jnp.mean(jnp.square(value)) for value in features.values())

        results.append((jax.jit(jax.value_and_grad(loss))(params), jax.make_jaxpr(jax.grad(loss))))
    (plain_value, plain_jaxpr), (remat_value, remat_jaxpr) = results
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, remat_value, plain_value)
    assert _has_checkpoint(remat_jaxpr(params).jaxpr)
    assert not _has_checkpoint(plain_jaxpr(params).jaxpr)
