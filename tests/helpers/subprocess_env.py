"""The environment that runs JAX on a given number of host devices: the test session's
(tests/conftest.py, 8) and its subprocesses'."""

import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def host_devices_env(count: int) -> dict[str, str]:
    """This process's environment with `count` host CPU devices: its other XLA flags and
    the session's compilation cache (tests/conftest.py) are kept."""
    flags = [
        flag for flag in os.environ.get("XLA_FLAGS", "").split()
        if not flag.startswith(DEVICE_COUNT_FLAG)
    ]
    return dict(os.environ, XLA_FLAGS=" ".join([*flags, f"{DEVICE_COUNT_FLAG}={count}"]))
