"""A checkpoint evaluated by `jaxseg.evaluate` as 2 processes x 2 host devices and in this
process over 4 devices (tests/test_multiprocess.py, tests/test_train_panoptic.py)."""

import errno
import os
import random
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


def _is_free(port: int) -> bool:
    """Whether `port` can be bound on every address, IPv4 and IPv6 (a coordinator binds
    them all)."""
    for family, host in ((socket.AF_INET, ""), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family) as sock:
                sock.bind((host, port))
        except OSError as error:  # taken, or (IPv6) not available on this host
            if family == socket.AF_INET or error.errno == errno.EADDRINUSE:
                return False
    return True


def run_processes(commands: list[list[str]], env) -> list[str]:
    """Runs `commands` at once (the processes of one job) in the repository, in `env` (one
    environment, or one per command); fails with a failing one's log, else returns their
    standard errors."""
    environments = env if isinstance(env, list) else [env] * len(commands)
    processes = [
        subprocess.Popen(
            command, env=environment, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for command, environment in zip(commands, environments)
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


# JAX's SLURM detection puts the coordinator on this port range's SLURM_JOB_ID % 4096-th.
SLURM_PORTS = 65535 - 2**12 + 1


def slurm_environment(process_id: int, num_processes: int) -> dict[str, str]:
    """What `srun` sets that JAX's SLURM detection reads (jax._src.clusters.SlurmCluster),
    for a one-node job step on this host; the job id picks a free coordinator port."""
    ports = list(range(SLURM_PORTS, 65536))
    random.shuffle(ports)  # apart from other jobs' coordinators, which may linger
    port = next(port for port in ports if _is_free(port))
    return {
        "SLURM_JOB_ID": str(port - SLURM_PORTS), "SLURM_STEP_NODELIST": "localhost",
        "SLURM_STEP_NUM_NODES": "1", "SLURM_NTASKS": str(num_processes),
        "SLURM_PROCID": str(process_id), "SLURM_LOCALID": str(process_id),
    }


def evaluate_in_one_and_two_processes(
    config, trained: str, directory: str, split: str, slurm: bool = False
):
    """Evaluates a copy of the run `trained` (its `config`) on `split`, first in this
    process over 4 of its devices, then as 2 processes x 2 devices joined on localhost:
    by `--coordinator_address`, `--num_processes` and `--process_id`, or with `slurm` by
    `--distributed` alone in the environment `srun` gives (`slurm_environment`).

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
    command = [sys.executable, "-m", "jaxseg.evaluate", f"--workdir={workdir}", f"--split={split}"]
    if slurm:
        job = slurm_environment(0, 2)
        environments = [
            {**host_devices_env(2), **job, "SLURM_PROCID": str(index), "SLURM_LOCALID": str(index)}
            for index in range(2)
        ]
        commands = [command + ["--distributed"]] * 2
    else:
        coordinator = f"127.0.0.1:{free_port()}"
        environments = [host_devices_env(2)] * 2
        commands = [
            command + [f"--coordinator_address={coordinator}", "--num_processes=2", f"--process_id={index}"]
            for index in range(2)
        ]
    logs = run_processes(commands, environments)
    return one_process, results, logs
