"""Test set-up: 8 host CPU devices so multi-device code is exercised on the CPU, and one
persistent XLA compilation cache for the session.

Both must be set before JAX is imported anywhere. The cache is passed to the tests'
subprocesses through the environment (`JAX_COMPILATION_CACHE_DIR`), so the many tests
that build the same tiny models compile each program once; an executable read from the
cache is the one compiled before, so results do not depend on test order. The cache is
deleted when the session ends.

Every run ends with a line naming its wall time and the CPU it ran on.
"""
import atexit
import os
import shutil
import tempfile
import time

import pytest

from tests.helpers.subprocess_env import host_devices_env

os.environ["XLA_FLAGS"] = host_devices_env(8)["XLA_FLAGS"]

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="jaxseg-tests-xla-cache-")
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR


_SESSION_START = time.monotonic()


@pytest.fixture(scope="session")
def tiny_mask_rcnn_run(tmp_path_factory):
    """One finished run of `tiny_mask_rcnn_config` (4 steps through `train.run_training`),
    read by the Mask R-CNN training, predict and backbone-export tests:
    (config, workdir, state, result). Its data dir is the `data_dir` of those modules."""
    from jaxseg import train  # pylint: disable=g-import-not-at-top
    from tests.test_train_mask_rcnn import tiny_mask_rcnn_config  # pylint: disable=g-import-not-at-top

    config = tiny_mask_rcnn_config(str(tmp_path_factory.mktemp("tfds")))
    workdir = str(tmp_path_factory.mktemp("tiny_mask_rcnn_run"))
    state, result = train.run_training(config, workdir)
    return config, workdir, state, result


def pytest_terminal_summary(terminalreporter):
    """Ends every run with what it cost where: the suite's wall time and the CPU model
    (the same suite takes about 2x as long on an AVX2 EPYC as on an AVX-512 Xeon)."""
    from jaxseg.record import cpu_model  # pylint: disable=g-import-not-at-top

    minutes, seconds = divmod(round(time.monotonic() - _SESSION_START), 60)
    terminalreporter.write_line(
        f"suite: {minutes} min {seconds:02d} s on {cpu_model()}, {os.cpu_count()} CPUs"
    )
