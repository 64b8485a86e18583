"""launch/: the SLURM script parses, runs the README's command with JAX's detection, and
requeues itself until the run has finished (srun and scontrol stubbed); the TPU pod
script runs that command on every worker (gcloud stubbed)."""

import os
import re
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(REPO, "launch", "slurm_gpu.sbatch")
TPU_POD = os.path.join(REPO, "launch", "tpu_pod.sh")


def _directives() -> dict[str, str]:
    with open(SBATCH) as file:
        found = re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", file.read(), re.MULTILINE)
    return dict(found)


def test_one_process_per_gpu_and_a_signal_before_the_limit():
    directives = _directives()
    assert directives["ntasks-per-node"] == directives["gpus-per-node"]
    assert "gpus-per-task" not in directives and "requeue" in directives
    assert directives["signal"].startswith("TERM@")
    subprocess.run(["bash", "-n", SBATCH], check=True)


def _srun_command() -> str:
    with open(SBATCH) as file:
        text = file.read()
    return re.search(r"^srun .*?[^\\]$", text, re.MULTILINE | re.DOTALL).group(0)


def test_the_readme_shows_the_command_the_script_runs():
    with open(os.path.join(REPO, "README.md")) as file:
        assert _srun_command() in file.read()


def _stub(directory, name: str) -> None:
    path = directory / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "$CALLS"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("finished", [False, True])
def test_it_runs_the_job_then_requeues_unless_the_run_finished(tmp_path, finished):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("srun", "scontrol"):
        _stub(bin_dir, name)
    workdir = tmp_path / "run"
    workdir.mkdir()
    if finished:
        (workdir / "metrics.json").write_text("{}")
    calls = tmp_path / "calls"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls),
               WORKDIR=str(workdir), SLURM_JOB_ID="4242")
    subprocess.run(["bash", SBATCH, "--config.seed=3"], env=env, cwd=REPO, check=True)
    lines = calls.read_text().splitlines()
    assert lines[0] == (
        "srun --kill-on-bad-exit=1 python -m jaxseg.main --config=configs/mask_rcnn_coco.py "
        f"--workdir={workdir} --distributed --config.model.fast_cpu_ops=False --config.seed=3"
    )
    assert lines[1:] == ([] if finished else ["scontrol requeue 4242"])
    without_workdir = {k: v for k, v in env.items() if k != "WORKDIR"}
    failed = subprocess.run(["bash", SBATCH], env=without_workdir, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode != 0 and "set WORKDIR" in failed.stderr


def test_the_tpu_script_runs_the_command_on_every_worker(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "gcloud")
    calls = tmp_path / "calls"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls),
               TPU="slice", ZONE="zone-a", WORKDIR="gs://bucket/run")
    for overrides in ([], ["--config.data.root=/mnt/my coco"]):
        calls.unlink(missing_ok=True)
        subprocess.run(["bash", TPU_POD, *overrides], env=env, cwd=REPO, check=True)
        expected = (
            "gcloud compute tpus tpu-vm ssh slice --zone=zone-a --worker=all --command=cd ~/jaxseg && "
            ".venv/bin/python -m jaxseg.main --config=configs/mask_rcnn_coco.py --workdir=gs://bucket/run "
            "--distributed --config.model.fast_cpu_ops=False"
        )
        if overrides:
            expected += " --config.data.root=/mnt/my\\ coco"
        assert calls.read_text().splitlines() == [expected]
    failed = subprocess.run(["bash", TPU_POD], env={**env, "TPU": ""}, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode != 0 and "set TPU" in failed.stderr
