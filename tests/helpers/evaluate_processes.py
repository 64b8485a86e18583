"""A checkpoint evaluated by `jaxseg.evaluate` as 2 processes x 2 host devices and in this
process over 4 devices (tests/test_multiprocess.py, tests/test_train_panoptic.py)."""

import os
import shutil
import socket
import subprocess
import sys

from tests.helpers.subprocess_env import host_devices_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_processes(commands: list[list[str]], env: dict) -> list[str]:
    """Runs `commands` at once (the processes of one job) in the repository; fails with a
    failing one's log, else returns their standard errors."""
    processes = [
        subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
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
    return [stderr for _, stderr in logs]


def evaluate_in_one_and_two_processes(config, trained: str, directory: str, split: str):
    """Evaluates a copy of the run `trained` (its `config`) on `split`, first in this
    process over 4 of its devices, then as 2 processes x 2 devices joined on localhost.

    Returns the results folders of the one-process and the two-process evaluation, and the
    two processes' standard errors.
    """
    import jax  # pylint: disable=g-import-not-at-top

    from jaxseg import evaluate  # pylint: disable=g-import-not-at-top

    workdir = os.path.join(directory, "run")
    shutil.copytree(trained, workdir)
    results, _ = evaluate.evaluate_checkpoint(config, workdir, split, devices=jax.devices()[:4])
    one_process = os.path.join(directory, "one_process")
    shutil.move(results, one_process)
    coordinator = f"127.0.0.1:{free_port()}"
    commands = [
        [sys.executable, "-m", "jaxseg.evaluate", f"--workdir={workdir}", f"--split={split}",
         f"--coordinator_address={coordinator}", "--num_processes=2", f"--process_id={index}"]
        for index in range(2)
    ]
    logs = run_processes(commands, host_devices_env(2))
    return one_process, results, logs
