"""Time the jitted U-Net train step (Adam, softmax cross-entropy) on this host.

Cases: (a) the shipped model settings (flags), (b) features=(64, 128, 256) at
batch 4, 128x128 and 256x256. Each JAX case runs with the plain Flax ops and
with `fast_cpu_ops=True`; when torch is importable the same architecture is
timed in PyTorch (CPU, 2 threads) in the same run, and the table shows the
ratio JAX / PyTorch of the medians. Variants are timed in interleaved rounds
(one step of each per round) so that they share the background load; the
table gives the median and the minimum over `--repeats` rounds. Compile time
is excluded from them and printed on its own.

XLA flags are process-wide and read when JAX starts: to try one, set
XLA_FLAGS in the environment of this script (e.g.
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/unet_step.py`).

Usage: python benchmarks/unet_step.py [--features=16,32,64,128 --image_size=128 ...]
"""
import argparse
import dataclasses
import math
import pathlib
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a clone

from jaxseg.models import UNet  # noqa: E402
from jaxseg.ops.flat_key import flat_key  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    features: tuple[int, ...]
    batch_size: int
    image_size: int
    num_classes: int
    norm: str
    upsample: str


def interleaved_step_times(
    steps: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """(median, minimum) seconds per call of each step, timed in interleaved rounds.

    Every round runs each step once, so all variants see the same background
    load of a shared machine.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def _batch(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, H, W, 3] float32 and labels [N, H, W] int32."""
    rng = np.random.default_rng(seed)
    shape = (case.batch_size, case.image_size, case.image_size)
    images = rng.normal(size=shape + (3,)).astype(np.float32)
    labels = rng.integers(0, case.num_classes, size=shape).astype(np.int32)
    return images, labels


def prepare_jax_step(case: Case, fast_cpu_ops: bool) -> tuple[float, Callable[[], None]]:
    """Compile the Adam train step of the Flax U-Net: (compile seconds, run one step)."""
    model = UNet(
        case.num_classes,
        features=case.features,
        norm=case.norm,
        upsample=case.upsample,
        fast_cpu_ops=fast_cpu_ops,
    )
    images, labels = _batch(case)
    variables = model.init(flat_key(jax.random.key(0)), images[:1], train=False)
    optimizer = optax.adam(1e-3)
    state = (variables["params"], variables.get("batch_stats", {}))
    state = state + (optimizer.init(state[0]),)

    def train_step(state, images, labels):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates.get("batch_stats", {})

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    images, labels = jnp.asarray(images), jnp.asarray(labels)
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, images, labels).compile()
    compile_s = time.perf_counter() - start
    holder = [state]

    def step():
        holder[0], loss = compiled(holder[0], images, labels)
        jax.block_until_ready((holder[0], loss))

    return compile_s, step


def _torch_unet(torch, case: Case):
    """The same U-Net as `jaxseg.models.UNet` in PyTorch (NCHW), for timing only."""
    nn = torch.nn

    def conv_norm_relu(in_ch, out_ch):
        norm = {
            "batch": lambda: nn.BatchNorm2d(out_ch, eps=1e-5),
            "group": lambda: nn.GroupNorm(math.gcd(32, out_ch), out_ch, eps=1e-5),
            "none": nn.Identity,
        }[case.norm]()
        conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=case.norm != "batch")
        return [conv, norm, nn.ReLU(inplace=True)]

    def double_conv(in_ch, out_ch):
        return nn.Sequential(*conv_norm_relu(in_ch, out_ch), *conv_norm_relu(out_ch, out_ch))

    def upsample(in_ch, out_ch):
        if case.upsample == "transpose":
            return nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
        )

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = case.features
            self.down = nn.ModuleList(
                double_conv(3 if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)
            )
            self.up = nn.ModuleList(
                upsample(widths[i + 1], widths[i]) for i in range(len(widths) - 1)
            )
            self.decode = nn.ModuleList(
                double_conv(2 * widths[i], widths[i]) for i in range(len(widths) - 1)
            )
            self.head = nn.Conv2d(widths[0], case.num_classes, 1)

        def forward(self, x):
            skips = []
            for level, block in enumerate(self.down):
                if level > 0:
                    x = torch.nn.functional.max_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            for level in reversed(range(len(self.up))):
                x = torch.cat([skips[level], self.up[level](x)], dim=1)
                x = self.decode[level](x)
            return self.head(x)

    return TorchUNet()


def prepare_torch_step(case: Case) -> Callable[[], None] | None:
    """One train step of the same model in PyTorch (CPU, 2 threads), or None without torch."""
    try:
        import torch  # noqa: PLC0415 (optional reference, never a dependency)
    except ImportError:
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = _torch_unet(torch, case)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = _batch(case)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels).long()
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def _parse_features(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=_parse_features, default=(16, 32, 64, 128))
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_classes", type=int, default=4)
    parser.add_argument("--norm", choices=("batch", "group", "none"), default="batch")
    parser.add_argument("--upsample", choices=("transpose", "bilinear"), default="transpose")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument(
        "--only", choices=("all", "shipped", "reference"), default="all",
        help="shipped: only the flag-configured model; reference: only (64,128,256)",
    )
    return parser.parse_args()


def _cases(args: argparse.Namespace) -> list[Case]:
    shipped = Case(
        "shipped", args.features, args.batch_size, args.image_size,
        args.num_classes, args.norm, args.upsample,
    )
    reference = [
        Case(f"ref{size}", (64, 128, 256), 4, size, args.num_classes, args.norm, args.upsample)
        for size in (128, 256)
    ]
    return {"all": [shipped] + reference, "shipped": [shipped], "reference": reference}[args.only]


def main() -> None:
    args = _parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}, repeats {args.repeats} (medians)")
    header = (
        f"{'case':8} {'features':20} {'batch':>5} {'size':>5} {'variant':12} "
        f"{'compile s':>9} {'step ms':>9} {'min ms':>8} {'img/s':>8} {'vs torch':>8}"
    )
    print(header)
    print("-" * len(header))
    for case in _cases(args):
        steps, compile_s = {}, {}
        for variant, fast in (("jax plain", False), ("jax fast", True)):
            compile_s[variant], steps[variant] = prepare_jax_step(case, fast)
        torch_step = None if args.no_torch else prepare_torch_step(case)
        if torch_step is not None:
            steps["torch"] = torch_step
        timings = interleaved_step_times(steps, args.warmup, args.repeats)
        for variant, (seconds, fastest) in timings.items():
            ratio = f"{seconds / timings['torch'][0]:8.2f}" if "torch" in timings else f"{'-':>8}"
            compile_text = f"{compile_s[variant]:9.1f}" if variant in compile_s else f"{'-':>9}"
            print(
                f"{case.name:8} {','.join(map(str, case.features)):20} {case.batch_size:5d} "
                f"{case.image_size:5d} {variant:12} {compile_text} "
                f"{seconds * 1e3:9.1f} {fastest * 1e3:8.1f} {case.batch_size / seconds:8.1f} {ratio}",
                flush=True,
            )

if __name__ == "__main__":
    main()
