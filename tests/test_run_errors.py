"""A run's own mistakes: a work directory of another config, strict metrics.json, and the
one-line command-line errors for a missing config file, indivisible batches and typos."""

import json
import math
import os

import pytest

from jaxseg import config_files, train
from jaxseg.errors import WorkdirError
from tests.test_config import run_main
from tests.test_train import tiny_config


def _stored_run(workdir, config) -> str:
    """A work directory as a run of `config` leaves it: config.json and a checkpoint folder."""
    os.makedirs(os.path.join(workdir, "checkpoints", "6"))
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def _snapshot(workdir) -> dict:
    """Every file and folder under `workdir` with its bytes (None for folders)."""
    found = {}
    for root, folders, files in os.walk(workdir):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), workdir)] = None
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), workdir)] = f.read()
    return found


def test_same_config_and_allowed_changes_may_resume(tmp_path):
    config = tiny_config(str(tmp_path / "tfds"))
    _stored_run(str(tmp_path), config)
    config_files.check_workdir_config(config, str(tmp_path))
    for name in config_files.RESUMABLE_CHANGES:
        config[name] = config[name] * 2 + 1
    config_files.check_workdir_config(config, str(tmp_path))
    config_files.check_workdir_config(config, str(tmp_path / "fresh"))


def test_other_config_is_refused_naming_each_differing_field(tmp_path):
    stored = tiny_config(str(tmp_path / "tfds"))
    _stored_run(str(tmp_path), stored)
    other = tiny_config(str(tmp_path / "tfds"), seed=7, loss__name="dice", num_train_steps=60)
    del other.num_prediction_images
    with pytest.raises(WorkdirError) as error:
        config_files.check_workdir_config(other, str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert "config.loss.name is 'ce+dice' there, 'dice' here" in message
    assert "config.seed is 0 there, 7 here" in message
    assert "config.num_prediction_images is 3 there, absent here" in message
    assert "num_train_steps is" not in message


def test_many_differences_list_the_first_five_by_name_and_count_the_rest(tmp_path):
    stored = tiny_config(str(tmp_path / "tfds"))
    _stored_run(str(tmp_path), stored)
    other = tiny_config(
        str(tmp_path / "tfds"),
        seed=1,
        batch_size=16,
        eval_batch_size=16,
        learning_rate=0.5,
        model__features=(8, 16),
        data__image_size=64,
        data__num_train=30,
    )
    with pytest.raises(WorkdirError) as error:
        config_files.check_workdir_config(other, str(tmp_path))
    listed = (
        "config.batch_size is 8 there, 16 here; config.data.image_size is 32 there, 64 here; "
        "config.data.num_train is 24 there, 30 here; config.eval_batch_size is 8 there, 16 "
        "here; config.learning_rate is 0.003 there, 0.5 here; and 2 more."
    )
    assert listed in str(error.value)


def test_training_refuses_another_run_and_leaves_its_directory_untouched(tmp_path):
    stored = tiny_config(str(tmp_path / "tfds"))
    workdir = str(tmp_path / "run")
    _stored_run(workdir, stored)
    before = _snapshot(workdir)
    with pytest.raises(WorkdirError, match="config.learning_rate is 0.003 there, 0.01 here"):
        train.train_and_evaluate(tiny_config(str(tmp_path / "tfds"), learning_rate=0.01), workdir)
    assert _snapshot(workdir) == before
    assert not os.path.exists(tmp_path / "tfds")


def test_metrics_json_is_strict_json_with_null_for_undefined_values(tmp_path):
    path = str(tmp_path / "metrics.json")
    train.write_metrics(path, {"box_ap": 0.5, "box_ap_small": math.nan, "ratio": math.inf,
                               "step": 3})
    with open(path) as f:
        text = f.read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"box_ap": 0.5, "box_ap_small": None, "ratio": None, "step": 3}


def _one_line_error(result) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_config_file_is_one_line():
    result = run_main(config="missing.py")
    assert _one_line_error(result) == (
        "Config file configs/missing.py not found (--config=configs/missing.py)."
    )


def test_typo_among_several_overrides_names_only_the_bad_one():
    line = _one_line_error(
        run_main("--config.seed=3", "--config.model.normm=batch", "--config.batch_size=16")
    )
    assert line == (
        "Invalid config override --config.model.normm=batch: no such field 'normm' in "
        "config.model (did you mean 'norm'?)."
    )


def test_batch_size_not_divisible_by_the_devices_is_one_line():
    # The tests run on 8 host devices (tests/conftest.py), which the subprocess inherits.
    line = _one_line_error(run_main("--config.batch_size=12"))
    assert line == (
        "Invalid config: config.batch_size=12 must be a positive multiple of the number of "
        "devices (8)."
    )
    assert not os.path.exists("/nonexistent/never-created")


def test_workdir_of_another_config_is_one_line_and_untouched(tmp_path):
    from tests.test_config import load_config_file

    workdir = str(tmp_path / "run")
    config_path = _stored_run(workdir, load_config_file("unet_shapes.py"))
    before = _snapshot(workdir)
    result = run_main("--config.seed=5", config="unet_shapes.py", workdir=workdir)
    assert _one_line_error(result) == (
        f"--workdir {workdir} holds a run of another config ({config_path}): config.seed is 0 "
        "there, 5 here. Use a new --workdir, or change only num_train_steps, log_every_steps, "
        "eval_every_steps, checkpoint_every_steps, keep_checkpoints to continue that run."
    )
    assert _snapshot(workdir) == before
