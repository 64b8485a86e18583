"""jaxseg.predict without a trained model: the model's input, mapping predictions back to the
image's pixels, and the one-line errors of the command line.

A 20 x 50 image at size 32 lies on the canvas as 13 x 32 (round(20 · 32 / 50) = 13): image
column c samples canvas column floor((c + 0.5) · 32 / 50), row r canvas row
floor((r + 0.5) · 13 / 20); box x coordinates scale by 50 / 32, y by 20 / 13.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import flagsaver
from PIL import Image

from jaxseg import predict
from jaxseg.data import batching, folders, geometry, pipeline
from jaxseg.data.images import read_rgb
from jaxseg.tasks.base import model_input
from tests import test_semantic_folder

SIZE = 32
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_model_input_is_the_pipelines_batch_image(tmp_path):
    """A non-square 24 x 40 image (resized to 19 x 32, padded) in a semantic folder: the
    array predict feeds the model equals the evaluation batch's image, bit for bit."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for name in ("a.png", "b.png"):  # the same pixels: each split holds one of them
        Image.fromarray(pixels).save(images / name)
        Image.fromarray(np.zeros((24, 40), np.uint8)).save(labels / name)
    data_config = test_semantic_folder.folder_data_config(
        str(images), str(labels), tmp_path / "tfds", validation_fraction=0.5
    )
    inputs, placement = model_input(read_rgb(images / "a.png"), geometry.Fit(SIZE))
    assert placement == geometry.Placement(24, 40, 19, 32)
    assert inputs.shape == (1, SIZE, SIZE, 3) and inputs.dtype == np.float32
    for split in folders.SPLITS:
        source = pipeline.load_split(data_config, split)
        batch = next(batching.eval_batches(source, 1, max_instances=1))
        fed = batching.model_images(jnp.asarray(batch["image"]))  # as the steps feed it
        np.testing.assert_array_equal(np.asarray(inputs), np.asarray(fed))
    assert not np.asarray(inputs)[0, 19:].any()


def _placement():
    _, placement = geometry.fit_image(np.zeros((20, 50, 3), np.uint8), geometry.Fit(SIZE))
    assert placement == geometry.Placement(20, 50, 13, 32)
    return placement


def test_label_map_maps_back_to_the_image_pixels():
    canvas = np.full((SIZE, SIZE), 9, np.int32)  # 9 in the padding: never mapped back
    canvas[:13] = np.arange(SIZE) // 8  # canvas columns 0..7 class 0, 8..15 class 1, ...
    label_map = _placement().label_map_to_image(canvas)
    expected = np.zeros((20, 50), np.int32)
    # Canvas column 8 is first sampled by image column 12 (12.5 · 0.64 = 8), 16 by 25, 24 by 37.
    expected[:, 12:25], expected[:, 25:37], expected[:, 37:] = 1, 2, 3
    np.testing.assert_array_equal(label_map, expected)


def test_boxes_map_back_to_the_image_pixels():
    boxes = np.array([[8, 0, 16, 6.5], [0, 10, 32, 20]], np.float32)
    mapped = _placement().boxes_to_image(boxes)
    # The second box reaches into the padding (rows 13..): clipped to the image's 20 rows.
    expected = [[12.5, 0.0, 25.0, 10.0], [0.0, 10 * 20 / 13, 50.0, 20.0]]
    np.testing.assert_allclose(mapped, expected, rtol=1e-6)


# --------------------------------------------------------------------------- errors


def _exit_message(workdir, input_path, output) -> str:
    """The message `predict.main` exits with for these flags (one line, no traceback)."""
    flags = [f"--workdir={workdir}", f"--input={input_path}", f"--output={output}"]
    with flagsaver.flagsaver():
        predict.FLAGS(["predict", *flags])
        with pytest.raises(SystemExit) as caught:
            predict.main([])
    message = str(caught.value.code)
    assert "\n" not in message and message
    return message


def _training_run(path, *, checkpoints: bool) -> str:
    """A folder with a config.json (and an empty checkpoints folder) but no checkpoint."""
    path.mkdir()
    (path / "config.json").write_text(
        json.dumps({"keep_checkpoints": 2, "checkpoint_every_steps": 1})
    )
    if checkpoints:
        (path / "checkpoints").mkdir()
    return str(path)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return str(path)


def test_missing_input_is_named(tmp_path):
    message = _exit_message(tmp_path, tmp_path / "nope", tmp_path / "out")
    assert message == f"--input: {tmp_path / 'nope'} is neither an image file nor a folder"


def test_input_that_is_not_an_image_is_named(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    message = _exit_message(tmp_path, tmp_path / "notes.png", tmp_path / "out")
    assert message.startswith(f"{tmp_path / 'notes.png'}: cannot read the image (")


def test_folder_with_a_broken_image_names_it(tmp_path, image_file):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    message = _exit_message(tmp_path, tmp_path, tmp_path / "out")
    assert message.startswith(f"{tmp_path / 'broken.jpg'}: cannot read the image (")


def test_folder_without_images_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    message = _exit_message(tmp_path, tmp_path / "empty", tmp_path / "out")
    assert message.startswith("--input: no images (.jpg, .jpeg, .png, ") and message.endswith(
        str(tmp_path / "empty")
    )


def test_workdir_without_config_json_is_named(tmp_path, image_file):
    message = _exit_message(tmp_path / "run", image_file, tmp_path / "out")
    workdir = tmp_path / "run"
    expected = f"--workdir: {workdir}/config.json not found: is {workdir} a jaxseg training"
    assert message == expected + " directory?"


def test_workdir_without_checkpoints_is_named(tmp_path, image_file):
    workdir = _training_run(tmp_path / "run", checkpoints=False)
    message = _exit_message(workdir, image_file, tmp_path / "out")
    assert message.startswith(f"--workdir: no checkpoints folder {workdir}/checkpoints")
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_workdir_with_an_empty_checkpoints_folder_is_named(tmp_path, image_file):
    workdir = _training_run(tmp_path / "run", checkpoints=True)
    message = _exit_message(workdir, image_file, tmp_path / "out")
    assert message == f"--workdir: no finished checkpoint in {workdir}/checkpoints"


def test_input_is_checked_before_the_workdir(tmp_path):
    """Both flags are wrong: the input's error comes first, nothing is created."""
    (tmp_path / "notes.png").write_text("not an image")
    message = _exit_message(tmp_path / "run", tmp_path / "notes.png", tmp_path / "out")
    assert "notes.png: cannot read the image" in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_command_line_error_is_one_line_without_traceback(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxseg.predict",
            f"--workdir={tmp_path}",
            f"--input={tmp_path / 'nope'}",
            f"--output={tmp_path / 'out'}",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"--input: {tmp_path / 'nope'} is neither an image file nor a folder"
    ]
