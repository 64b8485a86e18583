"""One process of the multi-process training tests: trains a tiny model, saves what it ended with.

Usage: python tests/helpers/distributed_worker.py TASK WORKDIR DATA_DIR OUT_NPZ NUM_STEPS
           [COORDINATOR NUM_PROCESSES PROCESS_ID]
TASK is a key of `CONFIGS`: "unet" (tests/test_train.py's `tiny_config`) or "mask_rcnn"
(tests/test_train_mask_rcnn.py's `tiny_mask_rcnn_config`). Without the last three
arguments it runs as one process over all its local devices.

The NPZ holds `step`, `process_count`, `device_count`; every final param and batch
statistic under its key path (names starting with "[") and its initial value under
`init/<key path>`; `loss/<name>`, the logged value
of every `train/*loss*` curve at each step (logged every step), read back from the run's
metrics.jsonl; and `metric/<name>`, every evaluation metric of the run's result.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg import sharding, train  # noqa: E402
from jaxseg.metric_writer import read_history  # noqa: E402
from tests.test_train import tiny_config  # noqa: E402
from tests.test_train_mask_rcnn import tiny_mask_rcnn_config  # noqa: E402

CONFIGS = {"unet": tiny_config, "mask_rcnn": tiny_mask_rcnn_config}
# Per-task overrides. Mask R-CNN trains with SGD: Adam's update divides by the gradient's
# scale, so a near-zero gradient (some box-delta biases of the background class) turns
# reduction-order noise between the two layouts into lr-sized, visibly different steps.
# No prediction pictures (they take seconds and nothing here looks at them).
OVERRIDES = {
    "unet": {},
    "mask_rcnn": {"optimizer__name": "sgd", "learning_rate": 0.02, "num_prediction_images": 0},
}
# Result entries that are not evaluation metrics (timings differ between runs).
NOT_METRICS = ("step", "train_loss", "train_seconds", "train_images_per_sec", "nonfinite_steps")


def logged_losses(workdir: str, num_steps: int) -> dict[str, np.ndarray]:
    """`loss/<name>`: the per-step values of each `train/*loss*` curve in `workdir`'s
    metrics.jsonl (written by process 0; read by every process once all have finished)."""
    sharding.wait_for_all_processes("training_finished")
    _, history = read_history(os.path.join(workdir, "metrics.jsonl"), num_steps)
    return {
        f"loss/{name[len('train/'):]}": np.asarray([value for _, value in points])
        for name, points in history.items()
        if name.startswith("train/") and "loss" in name
    }


def saved_arrays(state) -> dict[str, np.ndarray]:
    """Every param and batch statistic of `state` under its key path, as numpy copies."""
    leaves = jax.tree_util.tree_flatten_with_path((state.params, state.batch_stats))[0]
    return {jax.tree_util.keystr(path): np.array(sharding.to_host(leaf)) for path, leaf in leaves}


def keeping_initial_arrays(initial: dict):
    """`train.initial_state`, also putting the state's `saved_arrays` into `initial` as
    `init/<key path>` (before the first step donates its buffers)."""
    build = train.initial_state

    def initial_state(*args):
        state = build(*args)
        initial.update({f"init/{key}": value for key, value in saved_arrays(state).items()})
        return state

    return initial_state


def main(argv):
    task, workdir, data_dir, out_path, num_steps = argv[1:6]
    if argv[6:] == ["detect"]:
        sharding.initialize_distributed()
    elif len(argv) > 6:
        coordinator, num_processes, process_id = argv[6:9]
        sharding.initialize_distributed(coordinator, int(num_processes), int(process_id))
    steps = int(num_steps)
    config = CONFIGS[task](
        data_dir,
        num_train_steps=steps,
        log_every_steps=1,
        checkpoint_every_steps=steps,
        eval_every_steps=steps,
        optimizer__schedule="constant",
        optimizer__warmup_steps=0,
        **OVERRIDES[task],
    )
    initial = {}
    train.initial_state = keeping_initial_arrays(initial)
    state, result = train.run_training(config, workdir)
    metrics = {f"metric/{name}": value for name, value in result.items() if name not in NOT_METRICS}
    np.savez(
        out_path,
        step=result["step"],
        process_count=jax.process_count(),
        device_count=jax.device_count(),
        **saved_arrays(state),
        **initial,
        **logged_losses(workdir, steps),
        **metrics,
    )


if __name__ == "__main__":
    main(sys.argv)
