"""Surviving faults: non-finite steps, SIGTERM preemption, half-written checkpoints."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxseg import sharding, train, trained_run
from jaxseg.checkpointing import TMP_MARKER, Checkpointer
from jaxseg.data import batching, pipeline
from jaxseg.tasks import SemanticSegmentation
from tests.helpers.subprocess_env import host_devices_env
from tests.test_train import restore_final_state, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _one_device_steps(config):
    mesh = sharding.create_mesh(jax.devices()[:1])
    schedule = train.create_learning_rate_schedule(config)
    state = train.initial_state(config, mesh, schedule)
    return mesh, state, train.CompiledSteps(config, mesh, schedule)


def test_nonfinite_step_is_skipped_and_counted(data_dir):
    config = tiny_config(data_dir, optimizer__warmup_steps=0)
    mesh, state, steps = _one_device_steps(config)
    source = pipeline.load_split(config.data, "train")
    batch = next(batching.train_batches(source, 8, 0, max_instances=16))
    batch = {name: batch[name] for name in SemanticSegmentation.train_fields}
    before = jax.tree.map(np.asarray, (state.params, state.batch_stats, state.opt_state))

    poisoned = dict(batch, image=np.where(np.arange(8)[:, None, None, None] == 3, np.nan, 0.5))
    poisoned["image"] = poisoned["image"] * np.ones_like(batch["image"])
    state, metrics = steps.train(state, sharding.shard_batch(poisoned, mesh))
    assert not np.isfinite(float(metrics["loss"]))
    after = jax.tree.map(np.asarray, (state.params, state.batch_stats, state.opt_state))
    jax.tree.map(np.testing.assert_array_equal, after, before)
    assert int(state.step) == 1
    assert int(state.nonfinite_streak) == 1 and int(state.nonfinite_steps) == 1

    state, metrics = steps.train(state, sharding.shard_batch(batch, mesh))
    assert np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 2
    assert int(state.nonfinite_streak) == 0 and int(state.nonfinite_steps) == 1
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state.params, before[0])
    assert any(jax.tree.leaves(changed))


@pytest.mark.slow
def test_training_stops_after_consecutive_nonfinite_steps(data_dir, tmp_path, monkeypatch):
    constant = {"optimizer__schedule": "constant", "optimizer__warmup_steps": 0}
    config = tiny_config(
        data_dir,
        **constant,
        num_train_steps=12,
        log_every_steps=1,
        checkpoint_every_steps=100,
        eval_every_steps=100,
        max_consecutive_nonfinite_steps=3,
    )
    clean_dir = str(tmp_path / "clean")
    train.train_and_evaluate(tiny_config(data_dir, num_train_steps=4, **constant), clean_dir)

    original = train.device_batches

    def poisoned_after_four(config, source, start_step, fields, mesh):
        batches = original(config, source, start_step, fields, mesh)
        for step, batch in enumerate(batches, start=start_step):
            if step >= 4:
                image = batch["image"]
                nans = jax.device_put(np.full(image.shape, np.nan, np.float32), image.sharding)
                batch = dict(batch, image=nans)
            yield batch

    monkeypatch.setattr(train, "device_batches", poisoned_after_four)
    workdir = str(tmp_path / "poisoned")
    with pytest.raises(train.NonFiniteTrainingError, match="max_consecutive_nonfinite_steps=3"):
        train.train_and_evaluate(config, workdir)
    _, state = trained_run.load_trained_state(workdir)
    assert int(state.nonfinite_steps) >= 3 and int(state.step) < 12
    jax.tree.map(
        np.testing.assert_array_equal,
        restore_final_state(workdir),
        restore_final_state(clean_dir),
    )


def _main_command(workdir, data_dir, steps):
    return [
        sys.executable,
        "-m",
        "jaxseg.main",
        "--config=configs/unet_shapes.py",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        "--config.data.image_size=32",
        "--config.data.num_train=24",
        "--config.data.num_validation=8",
        "--config.data.num_test=4",
        "--config.model.features=(4, 8)",
        "--config.batch_size=8",
        "--config.eval_batch_size=8",
        f"--config.num_train_steps={steps}",
        "--config.log_every_steps=5",
        f"--config.eval_every_steps={steps}",
        "--config.checkpoint_every_steps=10",
        "--config.optimizer.warmup_steps=5",
    ]


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches_uninterrupted_run(data_dir, tmp_path):
    steps = 200
    env = host_devices_env(1)
    straight = str(tmp_path / "straight")
    subprocess.run(
        _main_command(straight, data_dir, steps),
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )

    interrupted = str(tmp_path / "interrupted")
    process = subprocess.Popen(
        _main_command(interrupted, data_dir, steps),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_checkpoint = os.path.join(interrupted, "checkpoints", "10")
        deadline = time.time() + 300
        while not os.path.exists(first_checkpoint) and time.time() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Stop requested (SIGTERM)" in stdout
    assert not os.path.exists(os.path.join(interrupted, "metrics.json"))
    stopped_at = max(
        int(name) for name in os.listdir(os.path.join(interrupted, "checkpoints")) if name.isdigit()
    )
    assert 10 <= stopped_at < steps

    resumed = subprocess.run(
        _main_command(interrupted, data_dir, steps),
        cwd=REPO,
        env=env,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    jax.tree.map(
        np.testing.assert_array_equal,
        restore_final_state(interrupted),
        restore_final_state(straight),
    )
    timing = ("train_seconds", "train_images_per_sec")
    straight_metrics, resumed_metrics = (
        {name: value for name, value in _metrics(workdir).items() if name not in timing}
        for workdir in (straight, interrupted)
    )
    assert resumed_metrics == straight_metrics


def _metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_half_written_checkpoint_is_skipped_with_a_warning(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(data_dir)
    train.train_and_evaluate(config, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    half_written = os.path.join(checkpoints, f"9{TMP_MARKER}-1764100000")
    shutil.copytree(os.path.join(checkpoints, "6"), half_written)
    shutil.rmtree(os.path.join(half_written, "state"))

    with pytest.warns(UserWarning, match="half-written checkpoint"):
        checkpointer = Checkpointer(checkpoints, max_to_keep=3, save_interval_steps=3)
    assert checkpointer.latest_step() == 6
    checkpointer.close()

    # Orbax deletes unfinished folders in the background, at the latest before a save.
    another = os.path.join(checkpoints, f"9{TMP_MARKER}-1764100001")
    shutil.copytree(os.path.join(checkpoints, "6"), another)
    with pytest.warns(UserWarning, match="half-written checkpoint"):
        result = train.train_and_evaluate(tiny_config(data_dir, num_train_steps=9), workdir)
    assert result["step"] == 9
    assert not os.path.exists(half_written) and not os.path.exists(another)
    assert os.path.isdir(os.path.join(checkpoints, "9"))
