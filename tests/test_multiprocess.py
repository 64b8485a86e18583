"""Multi-process training through jax.distributed: 2 processes x 2 CPU devices vs 1 x 4."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "helpers", "distributed_worker.py")
STEPS = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _load(path) -> dict:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def test_two_processes_match_one_process_with_the_same_devices(tmp_path):
    data_dir = str(tmp_path / "tfds")
    single = str(tmp_path / "single.npz")
    subprocess.run(
        [sys.executable, WORKER, str(tmp_path / "single_run"), data_dir, single, str(STEPS)],
        env=_env(4),
        check=True,
        timeout=600,
        capture_output=True,
    )

    coordinator = f"127.0.0.1:{_free_port()}"
    outputs = [str(tmp_path / f"process{i}.npz") for i in range(2)]
    workdir = str(tmp_path / "multi_run")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                workdir,
                data_dir,
                outputs[i],
                str(STEPS),
                coordinator,
                "2",
                str(i),
            ],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(processes, logs):
        assert process.returncode == 0, stderr[-3000:]

    first, second, reference = _load(outputs[0]), _load(outputs[1]), _load(single)
    assert first["process_count"] == 2 and first["device_count"] == 4
    assert reference["process_count"] == 1 and reference["device_count"] == 4
    assert int(first["step"]) == int(reference["step"]) == STEPS
    assert first.keys() == reference.keys()
    for name in (key for key in reference if key.startswith("[")):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_allclose(first[name], reference[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert os.path.exists(os.path.join(workdir, "metrics.json"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(STEPS)]
