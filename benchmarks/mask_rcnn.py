"""Time Mask R-CNN: the project's jitted train step and `MaskRCNN.detect` inference.

The train step is `jaxseg.train.CompiledSteps(...).train` on a data-parallel mesh (the
one training runs), fed a fixed synthetic batch: random images in [0, 1] with a few
elliptical objects each (boxes, labels, masks). Inference is the jitted
`MaskRCNN.detect` on the same images. Compile times are measured ahead of time and
printed on their own; the step times are the median and minimum over `--steps` rounds
after `--warmup` untimed ones. The JSON also gives the loss of the last train step (a
non-finite loss means the project's step left the parameters unchanged).

With `--torch` (when torch and torchvision import) the usual torchvision
`maskrcnn_resnet50_fpn` (no pretrained weights, `min_size = max_size = image size`,
`num_classes` of the config) is timed on the same data and batch: a train step with SGD
(Nesterov momentum, as `config.optimizer.name="sgd"`) and eval-mode inference, on
CUDA when JAX runs on a GPU, else on the CPU with 2 threads. With
`config.model.dtype=bfloat16` torch runs under bfloat16 autocast. torchvision keeps its
own defaults where they differ from `configs/mask_rcnn_r50_fpn.py`: trainable batch norm
without pretrained weights, pre-NMS top-k per level, 2000 post-NMS proposals in training,
and masks pasted only for the detections above its score threshold. All variants are
timed in interleaved rounds (one call of each per round) so that they share the
background load, and the table gives the ratio JAX / torch of the medians.

Usage: python benchmarks/mask_rcnn.py --config=configs/mask_rcnn_r50_fpn.py
           [--batch_size=N] [--steps=K] [--json] [--torch] [--config.model.dtype=bfloat16]
"""

import json
import pathlib
import sys
import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a clone

from benchmarks.synthetic import synthetic_batch  # noqa: E402
from benchmarks.unet_step import interleaved_step_times  # noqa: E402
from jaxseg import sharding, tasks, train  # noqa: E402
from jaxseg.models.mask_rcnn import MaskRCNN  # noqa: E402

TORCH_CPU_THREADS = 2


def _flag_values(argv: Sequence[str]) -> flags.FlagValues:
    """This script's flags, on their own `FlagValues` (so `main` can run inside a test).

    The config's `--config.FIELD=VALUE` overrides are looked up in `argv`.
    """
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Mask R-CNN config file (configs/*.py).",
        flag_values=values,
        sys_argv=list(argv),
    )
    flags.DEFINE_integer(
        "batch_size", None, "Images per step (default: config.batch_size).", flag_values=values
    )
    flags.DEFINE_integer("steps", 10, "Timed rounds.", flag_values=values)
    flags.DEFINE_integer("warmup", 2, "Untimed rounds after compiling.", flag_values=values)
    flags.DEFINE_integer(
        "num_devices", None, "Mesh over the first N devices (default: all).", flag_values=values
    )
    flags.DEFINE_bool(
        "json", False, "Print one JSON object instead of the table.", flag_values=values
    )
    flags.DEFINE_bool("torch", False, "Also time torchvision's Mask R-CNN.", flag_values=values)
    flags.mark_flag_as_required("config", flag_values=values)
    return values


def _progress(message: str) -> None:
    """A progress line on standard error (standard output is kept for the results)."""
    print(message, file=sys.stderr, flush=True)


def _timed_compile(jitted, *args) -> tuple[float, Callable]:
    """(seconds to lower and compile `jitted` for `args`, the compiled executable)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return time.perf_counter() - start, compiled


def prepare_jax_train(
    config, mesh, batch: dict[str, np.ndarray]
) -> tuple[float, Callable, Callable]:
    """The project's compiled train step: (compile seconds, run one step, latest loss)."""
    schedule = train.create_learning_rate_schedule(config)
    state = train.initial_state(config, mesh, schedule)
    steps = train.CompiledSteps(config, mesh, schedule)
    device_batch = sharding.shard_batch(batch, mesh)
    compile_s, compiled = _timed_compile(steps.train, state, device_batch)
    holder = [state, None]

    def step():
        holder[:] = compiled(holder[0], device_batch)
        jax.block_until_ready(holder)

    return compile_s, step, lambda: float(holder[1]["loss"])


def prepare_jax_detect(config, mesh, images: np.ndarray) -> tuple[float, Callable]:
    """Jitted `MaskRCNN.detect` with freshly initialized variables: (compile s, run once)."""
    task = tasks.task_for(config)
    init = jax.jit(
        lambda key: task.init_variables(key, images.shape[1:]),
        out_shardings=sharding.replicated(mesh),
    )
    variables = init(jax.random.key(config.seed))
    images = sharding.shard_batch({"image": images}, mesh)["image"]
    detect = jax.jit(lambda v, x: task.model.apply(v, x, method=MaskRCNN.detect))
    compile_s, compiled = _timed_compile(detect, variables, images)

    def step():
        jax.block_until_ready(compiled(variables, images))

    return compile_s, step


def prepare_torch(config, batch: dict[str, np.ndarray]) -> tuple[dict, dict[str, Callable]]:
    """torchvision Mask R-CNN train and eval calls on `batch`: (versions and device, steps).

    Raises ImportError without torch/torchvision and RuntimeError when JAX runs on a GPU
    but torch sees no CUDA device.
    """
    import torch  # noqa: PLC0415 (optional reference, never a dependency)
    import torchvision  # noqa: PLC0415

    on_gpu = jax.default_backend() == "gpu"
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("JAX runs on a GPU but torch has no CUDA device.")
    if not on_gpu:
        torch.set_num_threads(TORCH_CPU_THREADS)
    device = torch.device("cuda" if on_gpu else "cpu")
    bfloat16 = config.model.dtype == "bfloat16"
    torch.manual_seed(config.seed)
    size = config.data.image_size
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=config.data.num_classes,
        min_size=size,
        max_size=size,
    ).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.optimizer.momentum,
        weight_decay=config.optimizer.weight_decay,
        nesterov=True,
    )
    images = [torch.from_numpy(image).permute(2, 0, 1).to(device) for image in batch["image"]]
    targets = [
        {
            "boxes": torch.from_numpy(boxes[valid]).to(device),
            "labels": torch.from_numpy(labels[valid]).long().to(device),
            "masks": torch.from_numpy(masks[valid]).to(device),
        }
        for boxes, labels, masks, valid in zip(
            batch["boxes"], batch["labels"], batch["masks"], batch["instance_valid"]
        )
    ]

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)

    def synchronize():
        """Waits for the queued CUDA work (work on the CPU is synchronous)."""
        if on_gpu:
            torch.cuda.synchronize()

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        synchronize()

    def detect():
        model.eval()
        with torch.no_grad(), autocast():
            model(images)
        synchronize()

    info = {
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "torch_device": str(device),
        "torch_autocast": "bfloat16" if bfloat16 else None,
    }
    return info, {"torch train": train_step, "torch detect": detect}


def run_benchmark(
    config: ml_collections.ConfigDict,
    batch_size: int,
    steps: int,
    warmup: int,
    with_torch: bool,
    num_devices: int | None = None,
) -> dict:
    """Times the variants and returns the results (the `--json` object, less `config`)."""
    mesh = sharding.create_mesh(jax.devices()[:num_devices])
    sharding.check_batch_size(batch_size, mesh)
    size = config.data.image_size
    batch = synthetic_batch(
        batch_size, size, config.data.max_instances, config.data.num_classes, config.seed
    )
    compile_s, calls = {}, {}
    compile_s["jax train"], calls["jax train"], train_loss = prepare_jax_train(config, mesh, batch)
    _progress(f"jax train step compiled in {compile_s['jax train']:.1f} s")
    compile_s["jax detect"], calls["jax detect"] = prepare_jax_detect(config, mesh, batch["image"])
    _progress(f"jax detect compiled in {compile_s['jax detect']:.1f} s")
    results = {
        "batch_size": batch_size,
        "image_size": size,
        "dtype": config.model.dtype,
        "steps": steps,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": mesh.devices.size,
    }
    if with_torch:
        try:
            torch_info, torch_calls = prepare_torch(config, batch)
        except (ImportError, RuntimeError) as error:
            _progress(f"torch reference skipped: {error}")
        else:
            results.update(torch_info)
            calls.update(torch_calls)
    _progress(f"timing {', '.join(calls)}: {warmup} + {steps} rounds")
    timings = interleaved_step_times(calls, warmup, steps)
    results.update(
        train_compile_s=compile_s["jax train"],
        train_step_ms=timings["jax train"][0] * 1e3,
        train_step_min_ms=timings["jax train"][1] * 1e3,
        inference_compile_s=compile_s["jax detect"],
        inference_ms_per_image=timings["jax detect"][0] * 1e3 / batch_size,
        inference_min_ms_per_image=timings["jax detect"][1] * 1e3 / batch_size,
        train_loss=train_loss(),
    )
    if "torch train" in timings:
        results.update(
            torch_train_step_ms=timings["torch train"][0] * 1e3,
            torch_inference_ms_per_image=timings["torch detect"][0] * 1e3 / batch_size,
        )
        results.update(
            train_vs_torch=results["train_step_ms"] / results["torch_train_step_ms"],
            inference_vs_torch=(
                results["inference_ms_per_image"] / results["torch_inference_ms_per_image"]
            ),
        )
    results["timings"] = {
        name: {"median_ms": median * 1e3, "min_ms": fastest * 1e3, "compile_s": compile_s.get(name)}
        for name, (median, fastest) in timings.items()
    }
    return results


def format_table(results: dict) -> str:
    """The results as a header line and one row per timed variant."""
    lines = [
        f"config {results['config']}, batch {results['batch_size']}, "
        f"{results['image_size']}x{results['image_size']}, {results['dtype']}; "
        f"jax {results['jax_version']} on {results['num_devices']} x "
        f"{results['device_kind']} ({results['backend']})"
        + (
            f"; torch {results['torch_version']} on {results['torch_device']}"
            if "torch_version" in results
            else ""
        )
        + f"; median and min of {results['steps']} interleaved rounds"
    ]
    header = (
        f"{'variant':12} {'compile s':>9} {'median ms':>10} {'min ms':>9} {'ms/img':>8} "
        f"{'vs torch':>8}"
    )
    lines += [header, "-" * len(header)]
    timings = results["timings"]
    for name, timing in timings.items():
        reference = timings.get(name.replace("jax", "torch"))
        ratio = (
            f"{timing['median_ms'] / reference['median_ms']:8.2f}"
            if name.startswith("jax") and reference
            else f"{'-':>8}"
        )
        compile_text = f"{'-':>9}" if timing["compile_s"] is None else f"{timing['compile_s']:9.1f}"
        lines.append(
            f"{name:12} {compile_text} {timing['median_ms']:10.1f} {timing['min_ms']:9.1f} "
            f"{timing['median_ms'] / results['batch_size']:8.1f} {ratio}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> dict:
    """Parses `argv` (program name first), runs the benchmark, prints and returns the results."""
    values = _flag_values(argv)
    values(list(argv))
    config = values.config
    batch_size = values.batch_size or config.batch_size
    results = {"config": config_flags.get_config_filename(values["config"])}
    results.update(
        run_benchmark(
            config, batch_size, values.steps, values.warmup, values.torch, values.num_devices
        )
    )
    print(json.dumps(results) if values.json else format_table(results), flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv)
