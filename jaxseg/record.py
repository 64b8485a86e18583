"""Committed records of measured figures: `results/<name>/`.

`python -m jaxseg.record --name=NAME [--workdir=DIR] -- COMMAND ...` runs COMMAND (a
training run, a benchmark) and writes into `results/NAME/`:

| file | what |
|---|---|
| `record.json` | the command, git commit (and whether the tree had uncommitted changes), date, CPU model, core count, load average before and after, wall seconds, Python and JAX versions |
| `output.txt` | what the command printed on stdout (a benchmark's table) |
| `metrics.json`, `config.json` | copied from `--workdir` (a training run's outputs) |

Every figure the README quotes comes from such a folder; rerun the same command to check
it. Times depend on the CPU (the same step differs by 3x between machines here), so read
them beside `record.json`'s `cpu` and `load_average`.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR_FILES = ("metrics.json", "config.json")


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo reports it, with its widest vector extension
    ("AMD EPYC (AVX-512)"): machines of one model name here differ by 3x in speed."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    widest = next((name for flag, name in _VECTOR_EXTENSIONS if flag in flags), None)
    name = fields.get("model name", platform.machine())
    return f"{name} ({widest})" if widest else name


# /proc/cpuinfo flags of x86 vector extensions, widest first.
_VECTOR_EXTENSIONS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


def machine_and_code() -> dict:
    """Where and at which code a measurement runs: commit, date, CPU, cores, versions."""
    import jax  # pylint: disable=g-import-not-at-top

    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def portable_command(command: Sequence[str]) -> str:
    """`command` as one line that names nothing of this machine: a Python interpreter run
    by its absolute path (the first word) is `python`, and an absolute path inside the
    repository is relative to it ("/home/me/jaxseg/.venv/bin/python benchmarks/x.py" ->
    "python benchmarks/x.py")."""
    program, *arguments = command
    if os.path.isabs(program) and os.path.basename(program).startswith("python"):
        program = "python"
    words = [program, *arguments]
    return " ".join(
        os.path.relpath(word, REPO)
        if os.path.isabs(word) and os.path.commonpath([REPO, word]) == REPO
        else word
        for word in words
    )


def portable_output(text: str) -> str:
    """A command's printed `text` naming nothing of this machine: the repository's folder
    is dropped from paths in it, the temporary folder is `<tmp>`, the home folder `~`
    (TFDS logs where it prepared a dataset)."""
    for folder, name in ((REPO, "."), (tempfile.gettempdir(), "<tmp>"), (os.path.expanduser("~"), "~")):
        if os.path.isabs(folder) and folder != os.sep:
            text = text.replace(folder + os.sep, name + os.sep)
    return text


def write_record(
    directory: str, command: Sequence[str], workdir: Optional[str] = None
) -> dict:
    """Notes the commit and machine, runs `command`, then writes `directory`'s record.json, output.txt and (from `workdir`)
    metrics.json and config.json; returns the record. Raises CalledProcessError (after
    writing nothing) if the command fails, FileNotFoundError if `workdir` lacks a file."""
    record = {"command": portable_command(command), **machine_and_code()}
    load_before = os.getloadavg()
    start = time.perf_counter()
    finished = subprocess.run(list(command), stdout=subprocess.PIPE, text=True, check=True)
    record = {
        **record,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    copied = [os.path.join(workdir, name) for name in WORKDIR_FILES] if workdir else []
    for path in copied:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: did the command train into {workdir}?")
    os.makedirs(directory, exist_ok=True)
    for path in copied:
        shutil.copyfile(path, os.path.join(directory, os.path.basename(path)))
    with open(os.path.join(directory, "output.txt"), "w") as f:
        f.write(portable_output(finished.stdout))
    with open(os.path.join(directory, "record.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m jaxseg.record --name=NAME [--workdir=DIR] [--results=DIR] -- COMMAND ...`."""
    parser = argparse.ArgumentParser(prog="python -m jaxseg.record", description=__doc__)
    parser.add_argument("--name", required=True, help="the record's folder under --results")
    parser.add_argument("--workdir", help="the run's work directory (metrics.json, config.json)")
    parser.add_argument("--results", default=os.path.join(REPO, "results"))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --, e.g. -- make train")
    directory = os.path.join(args.results, args.name)
    try:
        record = write_record(directory, command, args.workdir)
    except subprocess.CalledProcessError as error:
        sys.exit(f"The command failed (exit {error.returncode}); no record written.")
    except FileNotFoundError as error:
        sys.exit(str(error))
    print(f"Recorded {record['command']} at {record['commit'][:8]} on {record['cpu']} in {directory}.")


if __name__ == "__main__":
    main()
