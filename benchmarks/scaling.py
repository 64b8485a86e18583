"""Data-parallel scaling of the jitted train step over host-platform devices.

For each device count (default 1, 2, 4, 8) a child process is started with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (the flag is read when JAX
starts) and times the train step of a config (U-Net or Mask R-CNN) at its global
batch size, on a fixed synthetic batch, in float32 and in bfloat16. The table
shows the median step time, images/s, and the peak memory per device where the
backend reports it (GPU/TPU; the CPU backend does not).

On one host the devices share the same cores, so this measures the overhead
of sharding (collectives, per-device dispatch), not a speed-up; on a GPU host
or a TPU slice the same script shows real scaling.

Usage: python benchmarks/scaling.py [--config=configs/mask_rcnn_shapes.py]
           [--devices=1,2,4,8] [--dtypes=float32,bfloat16] [--repeats=10] [--batch_size=8]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def time_train_step(config_path: str, dtype: str, repeats: int, batch_size: int = 0) -> dict:
    """Median seconds of the jitted train step on all local devices (child process)."""
    import jax

    from benchmarks.synthetic import synthetic_batch
    from jaxseg import sharding, train
    from jaxseg.config_files import load_config_file

    config = load_config_file(config_path)
    config.model.dtype = dtype
    if batch_size:
        config.batch_size = batch_size
    mesh = sharding.create_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    schedule = train.create_learning_rate_schedule(config)
    state = train.initial_state(config, mesh, schedule)
    steps = train.CompiledSteps(config, mesh, schedule)
    batch = synthetic_batch(
        config.batch_size,
        config.data.image_size,
        config.data.max_instances,
        config.data.num_classes,
        config.seed,
    )
    batch = sharding.shard_batch({name: batch[name] for name in steps.task.train_fields}, mesh)
    start = time.perf_counter()
    state, _ = steps.train(state, batch)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, _ = steps.train(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    stats = [device.memory_stats() for device in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s]
    return {
        "devices": jax.device_count(),
        "dtype": dtype,
        "batch_size": config.batch_size,
        "compile_s": compile_seconds,
        "step_s": statistics.median(times),
        "peak_bytes_per_device": max(peaks) if peaks else None,
    }


def run_child(config_path: str, devices: int, dtype: str, repeats: int, batch_size: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    command = [
        sys.executable,
        __file__,
        "--child",
        f"--config={config_path}",
        f"--dtypes={dtype}",
        f"--repeats={repeats}",
        f"--batch_size={batch_size}",
    ]
    output = subprocess.run(
        command, env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/unet_shapes.py")
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--batch_size", type=int, default=0, help="global batch size (default: the config's)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_train_step(args.config, args.dtypes, args.repeats, args.batch_size)))
        return

    print(f"config {args.config}, median of {args.repeats} steps")
    header = (
        f"{'devices':>7} {'dtype':>9} {'batch':>5} {'compile s':>9} {'step ms':>9} "
        f"{'img/s':>7} {'peak MiB/device':>15}"
    )
    print(header)
    print("-" * len(header))
    for devices in [int(d) for d in args.devices.split(",")]:
        for dtype in args.dtypes.split(","):
            row = run_child(args.config, devices, dtype, args.repeats, args.batch_size)
            peak = row["peak_bytes_per_device"]
            print(
                f"{row['devices']:>7} {dtype:>9} {row['batch_size']:>5} "
                f"{row['compile_s']:>9.1f} {row['step_s'] * 1e3:>9.1f} "
                f"{row['batch_size'] / row['step_s']:>7.1f} "
                f"{'n/a' if peak is None else f'{peak / 2**20:.1f}':>15}"
            )


if __name__ == "__main__":
    main()
