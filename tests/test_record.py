"""results/<name>/ records: the command's output, the run's files, commit, date and CPU."""

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from jaxseg import record


def test_record_holds_output_run_files_and_machine(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.json").write_text('{"miou": 0.5}')
    (workdir / "config.json").write_text('{"seed": 3}')
    command = [sys.executable, "-c", "print('| case | ms |')"]
    written = record.write_record(str(tmp_path / "results" / "x"), command, str(workdir))
    folder = tmp_path / "results" / "x"
    assert (folder / "output.txt").read_text() == "| case | ms |\n"
    assert json.loads((folder / "metrics.json").read_text()) == {"miou": 0.5}
    assert json.loads((folder / "config.json").read_text()) == {"seed": 3}
    stored = json.loads((folder / "record.json").read_text())
    assert stored == written
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=record.REPO, capture_output=True,
                          text=True).stdout.strip()
    assert stored["commit"] == head and len(head) == 40
    assert stored["cpu"] == record.cpu_model() and stored["cpu"]
    assert stored["command"] == "python -c print('| case | ms |')"
    assert stored["date"].startswith("20") and stored["wall_seconds"] >= 0


def test_the_command_names_no_path_of_this_machine():
    command = [f"{record.REPO}/.venv/bin/python3.11", f"{record.REPO}/benchmarks/x.py",
               "--workdir=runs/a", "/data/coco"]
    assert record.portable_command(command) == "python benchmarks/x.py --workdir=runs/a /data/coco"


def test_the_output_names_no_folder_of_this_machine():
    home, temporary = os.path.expanduser("~"), tempfile.gettempdir()
    printed = (f"prepared to {temporary}/tmpab12/shapes/1.0.0\n"
               f"reuse {home}/tensorflow_datasets/coco/1.0.0 and {record.REPO}/runs/a/ckpt\n")
    expected = "prepared to <tmp>/tmpab12/shapes/1.0.0\nreuse ~/tensorflow_datasets/coco/1.0.0 and ./runs/a/ckpt\n"
    assert record.portable_output(printed) == expected


def test_no_committed_record_names_a_folder_of_a_machine():
    results = os.path.join(record.REPO, "results")
    machine_path = re.compile(r"(?<![\w.~<>])/(tmp|root|home|work|Users)/")
    checked = 0
    for folder, _, names in os.walk(results):
        for name in names:
            with open(os.path.join(folder, name), errors="replace") as file:
                found = machine_path.search(file.read())
            assert found is None, (os.path.join(folder, name), found and found.group(0))
            checked += 1
    assert checked >= 20


def test_failed_command_or_missing_run_file_writes_nothing(tmp_path):
    folder = tmp_path / "results" / "x"
    with pytest.raises(subprocess.CalledProcessError):
        record.write_record(str(folder), [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        record.write_record(str(folder), [sys.executable, "-c", "pass"], str(tmp_path))
    assert not folder.exists()
