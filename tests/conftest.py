"""Test set-up: 8 host CPU devices so multi-device code is exercised on the CPU, code
generation that compiles fast, and one persistent XLA compilation cache for the session.

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

# 8 host devices; LLVM code generation without its optimization passes (XLA's own HLO
# passes still run). The tests build hundreds of tiny programs and most of their time is
# compiling them: on a 2-core AMD EPYC (AVX2) this ran tests/test_export_backbone.py in
# 94 s against 172 s, while the 400-step Mask R-CNN overfit (execution-bound) took 138 s
# against 99 s. Training runs and benchmarks outside the tests keep XLA's defaults.
for _FLAG in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"):
    _NAME = _FLAG.split("=")[0]
    if _NAME not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="jaxseg-tests-xla-cache-")
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR


_SESSION_START = time.monotonic()


def pytest_terminal_summary(terminalreporter):
    """Ends every run with what it cost where: the suite's wall time and the CPU model
    (the same suite takes about 2x as long on an AVX2 EPYC as on an AVX-512 Xeon)."""
    from jaxseg.record import cpu_model  # pylint: disable=g-import-not-at-top

    minutes, seconds = divmod(round(time.monotonic() - _SESSION_START), 60)
    terminalreporter.write_line(
        f"suite: {minutes} min {seconds:02d} s on {cpu_model()}, {os.cpu_count()} CPUs"
    )

