"""Test set-up: 8 host CPU devices so multi-device code is exercised on the CPU.

The flag must be set before JAX is imported anywhere.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
