"""One process of a 2-process job in which process 1 starts late.

Usage: python tests/helpers/late_process.py COORDINATOR PROCESS_ID CHECKPOINT_DIR DELAY_S

Both processes join through `sharding.initialize_distributed`; process 1 then sleeps
DELAY_S seconds (a slow start: a longer data build, a slower compile) before opening the
checkpoint directory, whose orbax barrier is the first collective between the two
processes. Both then take the SIGTERM check's vote. Exits 0 when both got through.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from jaxseg import checkpointing, sharding  # noqa: E402
from jaxseg.preemption import PreemptionWatcher  # noqa: E402


def main(argv):
    coordinator, process_id, directory, delay_s = argv[1:5]
    sharding.initialize_distributed(coordinator, 2, int(process_id))
    if jax.process_index() == 1:
        time.sleep(float(delay_s))
    checkpointing.Checkpointer(directory, max_to_keep=1, save_interval_steps=1).close()
    assert not PreemptionWatcher().stop_requested()


if __name__ == "__main__":
    main(sys.argv)
