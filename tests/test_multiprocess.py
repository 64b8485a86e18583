"""Multi-process training and evaluation through jax.distributed: 2 processes x 2 CPU
devices vs 1 x 4.

For each task (U-Net, Mask R-CNN) a tiny run through `train.run_training` as two processes
joined on localhost (the U-Net's by JAX's SLURM detection in the environment `srun` sets,
Mask R-CNN's by an explicit coordinator) must end where the same run as one process over
the same 4 devices ends: per-step losses, final params and batch statistics, and every validation metric
(the COCO APs for Mask R-CNN), and both processes must hold the same values.

Mask R-CNN's params are compared by how far training moved them: gloo sums the gradients
across processes in another order than one process does, and that float noise can send
a max-pool's gradient to the other of two near-equal inputs (in the stem), moving the
backbone's weights by up to 2% of their update in 4 steps while every loss still agrees
to 1e-7 (measured on an AVX2 AMD EPYC). A run that lost the cross-process reduction
would step each process on the gradient of its own half of the batch, another gradient
altogether rather than the same one rounded otherwise.

A Mask R-CNN checkpoint evaluated by `jaxseg.evaluate` as two processes must write exactly
the metrics and COCO results of one process, each process post-processing half the images.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.evaluate_processes import (
    evaluate_in_one_and_two_processes, free_port, run_processes, slurm_environment
)
from tests.helpers.subprocess_env import host_devices_env

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "helpers", "distributed_worker.py")
LATE_PROCESS = os.path.join(REPO, "tests", "helpers", "late_process.py")
# Past gloo's 30 s for connecting a group of devices.
LATE_START_S = 40
# Train steps per task.
STEPS = {"unet": 5, "mask_rcnn": 4}
# The loss of every task's train step, one of the curves each worker saves.
ALWAYS_LOGGED = "loss/loss"
# Per task, the largest ||two-process - one-process|| / ||one-process - initial|| of a
# final param or batch statistic; None: equal to 1e-5 like the losses.
UPDATE_TOLERANCE = {"unet": None, "mask_rcnn": 0.1}
# Tasks whose two processes join by JAX's SLURM detection (`--distributed` under srun).
JOINED_BY_SLURM_DETECTION = ("unet",)


def _load(path) -> dict:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _run_two_processes(task: str, workdir: str, data_dir: str, outputs: list[str]) -> None:
    """Runs the worker as processes 0 and 1 of a 2-process job: the U-Net joined as JAX
    detects a job in the environment `srun` sets, Mask R-CNN by an explicit coordinator."""
    commands = [
        [sys.executable, WORKER, task, workdir, data_dir, output, str(STEPS[task])]
        for output in outputs
    ]
    if task in JOINED_BY_SLURM_DETECTION:
        job = slurm_environment(0, 2)
        environments = [
            {**host_devices_env(2), **job, "SLURM_PROCID": str(index), "SLURM_LOCALID": str(index)}
            for index in range(2)
        ]
        run_processes([command + ["detect"] for command in commands], environments)
        return
    coordinator = f"127.0.0.1:{free_port()}"
    run_processes(
        [command + [coordinator, "2", str(index)] for index, command in enumerate(commands)],
        host_devices_env(2),
    )


def _assert_within_update(actual, reference, initial, tolerance: float, name: str) -> None:
    """`actual` is within `tolerance` of `reference`, measured against the distance
    training moved `reference` from `initial` (exactly equal if it did not move)."""
    moved = np.linalg.norm(reference - initial)
    apart = np.linalg.norm(actual - reference)
    assert apart <= tolerance * moved, (name, apart, moved)


@pytest.mark.parametrize("task", ["unet", "mask_rcnn"])
def test_two_processes_match_one_process_with_the_same_devices(task, tmp_path):
    data_dir = str(tmp_path / "tfds")
    single = str(tmp_path / "single.npz")
    steps = str(STEPS[task])
    command = [sys.executable, WORKER, task, str(tmp_path / "single_run"), data_dir, single, steps]
    subprocess.run(command, env=host_devices_env(4), check=True, timeout=600, capture_output=True)

    outputs = [str(tmp_path / f"process{i}.npz") for i in range(2)]
    workdir = str(tmp_path / "multi_run")
    _run_two_processes(task, workdir, data_dir, outputs)

    first, second, reference = _load(outputs[0]), _load(outputs[1]), _load(single)
    assert first["process_count"] == 2 and first["device_count"] == 4
    assert reference["process_count"] == 1 and reference["device_count"] == 4
    assert int(first["step"]) == int(reference["step"]) == STEPS[task]
    assert first.keys() == second.keys() == reference.keys()
    assert reference[ALWAYS_LOGGED].shape == (STEPS[task],)
    compared = [key for key in reference if key.startswith(("[", "loss/", "metric/"))]
    for name in compared:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        tolerance = UPDATE_TOLERANCE[task]
        if name.startswith("[") and tolerance is not None:
            initial = reference[f"init/{name}"]
            _assert_within_update(first[name], reference[name], initial, tolerance, name)
        else:
            np.testing.assert_allclose(
                first[name], reference[name], rtol=1e-5, atol=1e-5, err_msg=name
            )
    metrics = {key[len("metric/"):]: float(reference[key]) for key in compared if "metric/" in key}
    if task == "mask_rcnn":
        # The APs compared are those of real detections, not the zero of an empty output
        # (4 steps from scratch: mask AP50 0.002, box AP50 0 at this seed).
        assert metrics["mask_ap50"] > 0, metrics
    else:
        assert 0 < metrics["pixel_accuracy"] <= 1, metrics
    assert os.path.exists(os.path.join(workdir, "metrics.json"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [steps]


def test_a_process_starting_40_seconds_late_does_not_fail_the_first_collectives(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    directory = str(tmp_path / "checkpoints")
    commands = [
        [sys.executable, LATE_PROCESS, coordinator, str(index), directory, str(LATE_START_S)]
        for index in range(2)
    ]
    run_processes(commands, host_devices_env(2))
    assert os.path.isdir(directory)


def _read_json(path):
    with open(path) as file:
        return json.load(file)


def test_evaluate_on_two_processes_post_processes_half_each_and_scores_as_one(
    tiny_mask_rcnn_run, tmp_path
):
    """`jaxseg.evaluate` of a checkpoint joined as 2 processes x 2 devices: each process
    maps back, pastes and encodes the 8 of the 16 images it fed, and process 0 writes the
    metrics and COCO results of the same checkpoint evaluated by one process over 4 devices,
    exactly."""
    config, trained, _, _ = tiny_mask_rcnn_run
    one_process, two_processes, logs = evaluate_in_one_and_two_processes(
        config, trained, str(tmp_path), "train"
    )
    for index, log in enumerate(logs):
        assert f"process {index}: post-processed 8 of 16 images" in log, log[-2000:]
    results = {}
    for name, directory in (("one", one_process), ("two", two_processes)):
        results[name] = {
            file: _read_json(os.path.join(directory, file))
            for file in ("metrics.json", "coco_results.json", "image_ids.json")
        }
    assert results["two"] == results["one"]
    assert len(results["one"]["image_ids.json"]) == 16
    detections = results["one"]["coco_results.json"]
    assert len({result["image_id"] for result in detections}) > 8, "few images with detections"
