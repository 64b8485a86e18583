"""Device mesh and data-parallel sharding.

Data parallelism is plain `jax.jit` over `NamedSharding`s: the batch is split on
the mesh's `data` axis and parameters are replicated. The same code runs on one
CPU, on the 8 host devices of `--xla_force_host_platform_device_count=8`, on a
GPU host or a TPU slice; under `jax.distributed` each process contributes its
own shard of every global batch.
"""

import concurrent.futures
import itertools
import pickle
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.errors import ConfigError

DATA_AXIS = "data"
# How long a process waits at a barrier for the others (`wait_for_all_processes`): far
# above the 44 s measured for compiling the tests' small Mask R-CNN step as one of two
# processes on 2 cores (AVX2 AMD EPYC), room for full-size models (not measured here).
BARRIER_TIMEOUT_S = 3600
# Numbers the barriers, in the order every process reaches them, so that each is new.
_barrier_numbers = itertools.count()


def initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> None:
    """Joins a multi-process run through JAX's own distributed runtime.

    Arguments left None are detected by JAX from the cluster environment
    (SLURM, Open MPI, Cloud TPU, ...). Blocks until every process has joined.

    On CPU, cross-process collectives use gloo, which connects a group of devices at
    the first collective that uses it and gives up after 30 s if another process is not
    there yet; once connected, a collective waits for late processes as long as it takes.
    The groups of the one-device-per-process collectives (`process_allgather`, orbax's
    barriers, the SIGTERM check) are connected here, while every process is at the same
    barrier; `CompiledTogether` does the same for the train and eval steps.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    wait_for_all_processes("joined")
    multihost_utils.sync_global_devices("jaxseg_connect_process_groups")


def wait_for_all_processes(name: str) -> None:
    """Blocks until every process of the run reaches this barrier of JAX's coordination
    service (for at most `BARRIER_TIMEOUT_S`). Every process must call it in the same
    order; `name` only labels the barrier in errors."""
    barrier = ocp.multihost.get_barrier_sync_fn()
    key = f"jaxseg_{name}_{next(_barrier_numbers)}"
    barrier(key=key, timeout_ms=BARRIER_TIMEOUT_S * 1000)


def create_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh named `data` over `devices` (default: all global devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that puts a full copy of an array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) dimension over the `data` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "batch_size") -> None:
    """Raises ConfigError unless the global `batch_size` splits evenly over `mesh`."""
    num_devices = mesh.devices.size
    if batch_size <= 0 or batch_size % num_devices:
        raise ConfigError(
            f"config.{field}={batch_size} must be a positive multiple of the number of "
            f"devices ({num_devices})."
        )


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles global arrays from this process's share of a batch.

    Args:
      local_batch: dict of numpy arrays `[B_local, ...]`, this process's rows of
        the global batch (`B_local = B_global / process_count`).
      mesh: the data-parallel mesh.

    Returns:
      dict of `jax.Array`s `[B_global, ...]` sharded on the `data` axis.
    """
    sharding = batch_sharded(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local_batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of `tree` fully on every device of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def to_host(array: jax.Array) -> np.ndarray:
    """A numpy copy of a replicated (or single-device) array, also in multi-process runs."""
    return np.asarray(array.addressable_data(0))


def to_host_rows(tree: Any) -> Any:
    """numpy copies of this process's rows of arrays `[B_global, ...]` split on a mesh's
    `data` axis (`batch_sharded`): `[B_local, ...]`, the rows it fed (`shard_batch`'s
    inverse), in its order."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    mesh = jax.tree.leaves(tree)[0].sharding.mesh
    local = multihost_utils.global_array_to_host_local_array(
        tree, mesh, PartitionSpec(DATA_AXIS)
    )
    return jax.tree.map(np.asarray, local)


def _padded_bytes(value: Any) -> tuple[np.ndarray, int]:
    """`value` pickled into a uint8 array padded to a power of two (few distinct shapes,
    so few compiled collectives), and its length."""
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    padded = np.zeros(1 << max(len(payload) - 1, 1).bit_length(), np.uint8)
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    return padded, len(payload)


def gather_objects(value: Any) -> list[Any]:
    """Every process's picklable `value`, in process order (one process: `[value]`).

    Every process must call it at the same point. Each receives all values: what a
    process sends should be the small share of a result (detections, counts), not data.
    """
    if jax.process_count() == 1:
        return [value]
    padded, length = _padded_bytes(value)
    sizes = multihost_utils.process_allgather(np.asarray([length, padded.size], np.int64))
    buffer = np.zeros(int(sizes[:, 1].max()), np.uint8)
    buffer[: padded.size] = padded
    rows = multihost_utils.process_allgather(buffer)
    return [pickle.loads(row[:size].tobytes()) for row, size in zip(rows, sizes[:, 0])]


def from_first_process(value: Any) -> Any:
    """Process 0's picklable `value`, on every process (others pass anything, e.g. None).

    Every process must call it at the same point.
    """
    if jax.process_count() == 1:
        return value
    padded, length = _padded_bytes(value)
    sizes = multihost_utils.broadcast_one_to_all(np.asarray([length, padded.size], np.int64))
    buffer = np.zeros(int(sizes[1]), np.uint8)
    if jax.process_index() == 0:
        buffer[:] = padded
    buffer = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return pickle.loads(buffer[: int(sizes[0])].tobytes())


def abstract_arrays(tree: Any) -> Any:
    """`tree` with every array leaf (a jax.Array or a spec) replaced by a
    ShapeDtypeStruct of its shape, dtype, sharding and weak type."""
    def abstract(x):
        weak_type = getattr(x, "weak_type", False)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding, weak_type=weak_type)

    return jax.tree.map(abstract, tree)


class CompiledTogether:
    """A jitted function whose first call in a multi-process run compiles ahead and
    waits for every process at `wait_for_all_processes` before running.

    CPU collectives (gloo) give up after 30 s when one process reaches a new collective
    while another is still compiling the program that holds it (the tests' small Mask R-CNN
    train step took 44 s to compile with two processes on 2 AVX2 EPYC cores). In one process it
    is the jitted function itself. Later calls with the same shapes reuse the compiled
    program.
    """

    def __init__(self, jitted: Callable, name: str):
        self._jitted = jitted
        self._name = name
        self._compiled = False

    def lower(self, *args):
        """The jitted function's `lower`, for ahead-of-time compiling (benchmarks)."""
        return self._jitted.lower(*args)

    def compile_in_background(self, *args) -> concurrent.futures.Future:
        """Starts compiling the program for `args` (arrays, or anything with a shape, dtype
        and sharding) in a thread; returns its future.

        XLA compiles with the GIL released, so another program (the first train step) can
        compile or run meanwhile; a call with the same shapes after the future is done
        reuses this program. Only the arguments' shapes, dtypes and shardings are read, now,
        so the arrays may be donated while it compiles.
        """
        specs = abstract_arrays(args)
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self._name)
        future = executor.submit(lambda: self.lower(*specs).compile())
        executor.shutdown(wait=False)
        return future

    def __call__(self, *args):
        if not self._compiled and jax.process_count() > 1:
            self.lower(*args).compile()
            wait_for_all_processes(f"compiled_{self._name}")
        self._compiled = True
        return self._jitted(*args)
