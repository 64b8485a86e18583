"""End-to-end training: outputs, resume exactness, determinism, 1 vs 8 devices, predict."""

import csv
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import predict, sharding, tasks, train, trained_run
from jaxseg.data import batching, pipeline
from jaxseg.config_files import load_config_file, load_workdir_config
from jaxseg.training.state import eval_variables

pytestmark = pytest.mark.slow


def tiny_config(data_dir: str, **overrides):
    """The shipped U-Net config shrunk to seconds: 32x32 images, a 2-level U-Net."""
    config = load_config_file(
        os.path.join(os.path.dirname(__file__), "..", "configs", "unet_shapes.py")
    )
    config.data.data_dir = data_dir
    config.data.image_size = 32
    config.data.num_train = 24
    config.data.num_validation = 10
    config.data.num_test = 4
    config.model.features = (4, 8)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 3
    config.optimizer.warmup_steps = 2
    config.num_prediction_images = 3
    return apply_overrides(config, overrides)


def apply_overrides(config, overrides):
    """Sets `config.a.b = value` for every `a__b=value` of `overrides`; returns `config`."""
    for path, value in overrides.items():
        node = config
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def first_train_steps(steps: train.CompiledSteps, config, mesh, schedule, num_steps: int = 2):
    """`num_steps` train steps from `config`'s initial state on the first global batches of
    its training split: (each step's metrics as floats, the final state)."""
    source = pipeline.load_split(config.data, "train")
    state = train.initial_state(config, mesh, schedule)
    batches = batching.train_batches(
        source,
        config.batch_size,
        config.seed,
        0,
        flip=True,
        max_instances=config.data.max_instances,
    )
    metrics = []
    for _ in range(num_steps):
        batch = next(batches)
        batch = {name: batch[name] for name in steps.task.train_fields}
        state, step_metrics = steps.train(state, sharding.shard_batch(batch, mesh))
        metrics.append({name: float(value) for name, value in step_metrics.items()})
    return metrics, state


def restore_final_state(workdir):
    """The newest checkpointed params and batch statistics of `workdir`, as numpy arrays."""
    _, state = trained_run.load_trained_state(workdir)
    return jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(data_dir, data__num_workers=0)
    result = train.train_and_evaluate(config, workdir)
    return config, workdir, result


def test_outputs_written(finished_run):
    config, workdir, result = finished_run
    with open(os.path.join(workdir, "metrics.json")) as f:
        written = json.load(f)
    assert written == pytest.approx(result, nan_ok=True)
    for key in (
        "step",
        "miou",
        "pixel_accuracy",
        "mean_dice",
        "train_loss",
        "train_images_per_sec",
        "train_seconds",
    ):
        assert key in written, key
    assert written["step"] == config.num_train_steps
    assert 0.0 <= written["miou"] <= 1.0 and 0.0 <= written["pixel_accuracy"] <= 1.0
    assert written["train_seconds"] > 0 and np.isfinite(written["train_loss"])
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["image_size"] == 32
    for name in ("predictions.png", "training_curves.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    assert any(
        name.startswith("events") for name in os.listdir(os.path.join(workdir, "tensorboard"))
    )
    steps = sorted(
        int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit()
    )
    assert steps == [3, 6]


def test_eval_metrics_match_numpy_recount(finished_run, data_dir):
    """Validation mIoU recomputed from scratch in numpy from the restored model's predictions."""
    config, workdir, result = finished_run
    _, state = trained_run.load_trained_state(workdir)
    task = tasks.task_for(config)
    source = pipeline.load_split(config.data, "validation")
    intersection = np.zeros(config.data.num_classes)
    union = np.zeros(config.data.num_classes)
    confusion = np.zeros((config.data.num_classes,) * 2, np.int64)
    correct = 0
    for index in range(len(source)):
        example = source[index]
        images = np.asarray(example["image"], np.float32)[None] / 255.0
        prediction = np.asarray(task.logits(eval_variables(state), images))[0].argmax(-1)
        truth = example["semantic"]
        np.add.at(confusion, (truth.ravel(), prediction.ravel()), 1)
        correct += np.sum(prediction == truth)
        for k in range(config.data.num_classes):
            intersection[k] += np.sum((prediction == k) & (truth == k))
            union[k] += np.sum((prediction == k) | (truth == k))
    present = union > 0
    expected_miou = np.mean(intersection[present] / union[present])
    assert result["miou"] == pytest.approx(expected_miou, abs=1e-6)
    pixels = len(source) * config.data.image_size**2
    assert result["pixel_accuracy"] == pytest.approx(correct / pixels, abs=1e-6)
    results_dir = os.path.join(workdir, "eval", f"validation_step{config.num_train_steps}")
    with open(os.path.join(results_dir, "confusion.csv"), newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["true \\ predicted", *config.data.class_names]
    assert [row[0] for row in rows[1:]] == list(config.data.class_names)
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], np.int64), confusion)
    with open(os.path.join(results_dir, "metrics.json")) as file:
        assert json.load(file)["miou"] == pytest.approx(result["miou"], abs=1e-12)


def test_resume_gives_exactly_the_uninterrupted_params(data_dir, tmp_path):
    constant = {"optimizer__schedule": "constant", "optimizer__warmup_steps": 0}
    straight = tiny_config(data_dir, num_train_steps=8, checkpoint_every_steps=4, **constant)
    train.train_and_evaluate(straight, str(tmp_path / "straight"))

    first_half = tiny_config(data_dir, num_train_steps=4, checkpoint_every_steps=4, **constant)
    resumed_dir = str(tmp_path / "resumed")
    train.train_and_evaluate(first_half, resumed_dir)
    result = train.train_and_evaluate(straight, resumed_dir)
    assert result["step"] == 8

    expected = restore_final_state(str(tmp_path / "straight"))
    actual = restore_final_state(resumed_dir)
    jax.tree.map(np.testing.assert_array_equal, actual, expected)


def test_same_config_and_seed_give_identical_runs_whatever_the_input_workers(finished_run, tmp_path):
    config, workdir, result = finished_run
    with_workers = apply_overrides(config.copy_and_resolve_references(), {"data__num_workers": 2})
    again = train.train_and_evaluate(with_workers, str(tmp_path / "again"))
    for key in ("train_loss", "miou", "pixel_accuracy", "mean_dice"):
        assert again[key] == result[key], key
    jax.tree.map(
        np.testing.assert_array_equal,
        restore_final_state(str(tmp_path / "again")),
        restore_final_state(workdir),
    )


def test_one_device_and_eight_devices_agree(data_dir):
    """Two SGD steps on the same global batches: 1-device and 8-device meshes agree to 1e-5."""
    assert jax.device_count() == 8
    config = tiny_config(
        data_dir,
        optimizer__name="sgd",
        optimizer__schedule="constant",
        optimizer__warmup_steps=0,
        learning_rate=0.1,
    )
    schedule = train.create_learning_rate_schedule(config)
    final = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.create_mesh(devices)
        steps = train.CompiledSteps(config, mesh, schedule)
        metrics, state = first_train_steps(steps, config, mesh, schedule)
        losses = [step["loss"] for step in metrics]
        final.append(jax.tree.map(np.asarray, (losses, state.params, state.batch_stats)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), *final)


def test_predict_writes_overlays_at_the_input_size(finished_run, tmp_path):
    _, workdir, _ = finished_run
    samples = sorted(os.listdir(os.path.join(workdir, "samples")))
    assert len(samples) == 3
    Image.fromarray(np.full((20, 50, 3), 200, np.uint8)).save(tmp_path / "odd_size.png")
    written = predict.write_overlays(workdir, str(tmp_path / "odd_size.png"), str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == ["odd_size_overlay.png"]
    # The image beside its predicted label map (2 * 50 + 3 * 4 wide, 20 + 20 + 4 high), then
    # legend rows of 20 pixels.
    width, height = Image.open(written[0]).size
    assert width == 112 and height > 44 and (height - 44) % 20 == 0
    written = predict.write_overlays(
        workdir, os.path.join(workdir, "samples"), str(tmp_path / "out_folder")
    )
    assert len(written) == 3


def test_predict_rejects_missing_workdir(tmp_path):
    with pytest.raises(trained_run.RunError, match="config.json"):
        trained_run.load_trained_state(str(tmp_path))


def test_predict_restores_an_ema_run_and_uses_the_average(data_dir, tmp_path):
    workdir = str(tmp_path / "ema")
    train.train_and_evaluate(tiny_config(data_dir, num_train_steps=3, ema_decay=0.9), workdir)
    _, state = trained_run.load_trained_state(workdir)
    assert state.ema_params is not None
    image = np.zeros((1, 32, 32, 3), np.float32)
    expected = state.apply_fn(
        {"params": state.ema_params, "batch_stats": state.batch_stats}, image, train=False
    )
    raw = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, image, train=False
    )
    task = tasks.task_for(load_workdir_config(workdir))
    actual = np.asarray(task.logits(eval_variables(state), image))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(actual - raw).max() > 1e-4
