"""Config files, validation errors naming the field, and the command line's handling of typos."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from jaxseg import config_files
from jaxseg.config_validation import ConfigError, validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")


def load_config_file(name: str) -> ml_collections.ConfigDict:
    return config_files.load_config_file(os.path.join(CONFIG_DIR, name))


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py")))
def test_every_shipped_config_is_valid(name):
    validate_config(load_config_file(name))


def test_flax_example_field_names_at_top_level():
    config = load_config_file("unet_shapes.py")
    for field in (
        "seed",
        "batch_size",
        "num_train_steps",
        "learning_rate",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
    ):
        assert field in config
    for group in ("model", "data", "loss", "optimizer"):
        assert isinstance(config[group], ml_collections.ConfigDict)


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("num_train_steps", -5, "config.num_train_steps"),
        ("batch_size", 0, "config.batch_size"),
        ("learning_rate", 0.0, "config.learning_rate"),
        ("eval_every_steps", 0, "config.eval_every_steps"),
        ("loss.name", "ce+dise", "config.loss.name"),
        ("loss.name", "", "config.loss.name"),
        ("data.image_size", 100, "config.data.image_size"),
        ("model.norm", "layer", "config.model.norm"),
        ("model.dtype", "float16", "config.model.dtype"),
        ("model.features", (), "config.model.features"),
        ("model.dropout_rate", 1.0, "config.model.dropout_rate"),
        ("optimizer.name", "adagrad", "config.optimizer.name"),
        ("optimizer.warmup_steps", 10**9, "config.optimizer.warmup_steps"),
        ("data.num_classes", 7, "config.data.class_names"),
        ("loss.ignore_label", 2, "config.loss.ignore_label"),
        ("data.max_object_size", 2.0, "config.data: min_object_size and max_object_size"),
        ("data.name", "coco", "config.data.name"),
        ("grad_accumulation_steps", 0, "config.grad_accumulation_steps"),
        ("grad_accumulation_steps", 3, "config.grad_accumulation_steps"),
        ("ema_decay", 1.0, "config.ema_decay"),
        ("ema_decay", -0.1, "config.ema_decay"),
        ("model.remat", "yes", "config.model.remat"),
    ],
)
def test_invalid_value_names_the_field(path, value, field):
    config = load_config_file("unet_shapes.py")
    parent = config
    *parents, leaf = path.split(".")
    for part in parents:
        parent = parent[part]
    with parent.ignore_type():
        parent[leaf] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    message = str(error.value)
    assert message.startswith(field), message
    assert "\n" not in message


def test_image_size_error_states_the_divisor():
    config = load_config_file("unet_shapes.py")
    config.model.features = (8, 16, 32, 64)
    config.data.image_size = 100
    with pytest.raises(ConfigError, match=r"image_size=100 must be divisible by 8"):
        validate_config(config)
    config.data.image_size = 104
    validate_config(config)


def test_config_json_round_trip(tmp_path):
    config = load_config_file("unet_shapes.py")
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    restored = config_files.load_workdir_config(str(tmp_path))
    assert json.loads(restored.to_json()) == json.loads(config.to_json_best_effort())
    validate_config(restored)


def run_main(*overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "jaxseg.main",
        "--config=configs/unet_shapes.py",
        "--workdir=/nonexistent/never-created",
        *overrides,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.modle.norm=batch", "no such field 'modle' (did you mean 'model'?)"),
        ("--config.model.normm=batch", "no such field 'normm' (did you mean 'norm'?)"),
        ("--config.num_train_steps=ten", "--config.num_train_steps=ten"),
        ("--config.num_train_steps=-1", "config.num_train_steps=-1 must be an integer >= 1"),
    ],
)
def test_command_line_error_is_one_line_naming_the_field(override, expected):
    result = run_main(override)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not os.path.exists("/nonexistent/never-created")
