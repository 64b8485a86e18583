"""One process of the multi-process training test: trains a tiny U-Net, saves its params.

Usage: python tests/helpers/distributed_worker.py WORKDIR DATA_DIR OUT_NPZ NUM_STEPS
           [COORDINATOR NUM_PROCESSES PROCESS_ID]
Without the last three it runs as one process over all its local devices.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg import sharding, train  # noqa: E402
from tests.test_train import tiny_config  # noqa: E402


def main(argv):
    workdir, data_dir, out_path, num_steps = argv[1:5]
    if len(argv) > 5:
        coordinator, num_processes, process_id = argv[5:8]
        sharding.initialize_distributed(coordinator, int(num_processes), int(process_id))
    steps = int(num_steps)
    config = tiny_config(
        data_dir,
        num_train_steps=steps,
        log_every_steps=1,
        checkpoint_every_steps=steps,
        eval_every_steps=steps,
        optimizer__schedule="constant",
        optimizer__warmup_steps=0,
    )
    state, result = train.run_training(config, workdir)
    leaves = jax.tree_util.tree_flatten_with_path((state.params, state.batch_stats))[0]
    arrays = {jax.tree_util.keystr(path): sharding.to_host(leaf) for path, leaf in leaves}
    np.savez(
        out_path,
        step=result["step"],
        process_count=jax.process_count(),
        device_count=jax.device_count(),
        **arrays,
    )


if __name__ == "__main__":
    main(sys.argv)
