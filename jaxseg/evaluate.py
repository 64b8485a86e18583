"""`python -m jaxseg.evaluate --workdir=DIR [--split=validation] [--step=N] [--config.a.b=v]`
`[--distributed | --coordinator_address=H:P --num_processes=N --process_id=I]`

Evaluates a checkpoint of a training run (the newest, or step N) without training, on any
split of its config's dataset, or of another dataset given by `--config.data...` overrides
(e.g. `--config.data.annotations=NEW.json`), data-parallel over all devices, in one
process or in a multi-process run (joined by the flags of `jaxseg.main`): each process
post-processes the images it fed and process 0 scores them all. Process 0 writes
`DIR/eval/<split>_step<N>/`: `metrics.json`, the task's raw results (instance:
`coco_results.json` and `image_ids.json`; semantic: `confusion.csv`) and `predictions.png`
with its input images in `samples/`. A --workdir that is not a training run, a missing
checkpoint or split, and a bad override each stop with one line.
"""

import os
import sys
from typing import Optional

import jax
import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxseg import registry
from jaxseg import sharding
from jaxseg import tasks
from jaxseg import train
from jaxseg import trained_run
from jaxseg.cli.distributed_flags import define_distributed_flags, join_if_distributed
from jaxseg.config_files import bad_override_message, flag_value
from jaxseg.config_validation import validate_config
from jaxseg.data import pipeline
from jaxseg.errors import ConfigError
from jaxseg.training.optim import create_learning_rate_schedule
from jaxseg.training.steps import CompiledSteps


def check_split(config: ml_collections.ConfigDict, split: str) -> None:
    """Raises RunError unless `config.data`'s dataset kind has the split `split`."""
    splits = registry.DATASETS.get(config.data.name).splits
    if split not in splits:
        raise trained_run.RunError(
            f"--split={split}: the {config.data.name} dataset has the splits {', '.join(splits)}"
        )


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    split: str = "validation",
    step: Optional[int] = None,
    devices: Optional[list] = None,
) -> tuple[str, dict]:
    """Evaluates the checkpoint of `workdir` at `step` (None: the newest) on `split` of
    `config.data`, data-parallel over `devices` (default: all); returns the results folder
    and the metrics written there.

    Raises:
      ConfigError: an invalid config field.
      RunError: no such split or checkpoint.
    """
    validate_config(config)
    check_split(config, split)
    mesh = sharding.create_mesh(devices)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    state = trained_run.restore_state(config, workdir, step, mesh)
    step = int(sharding.to_host(state.step))
    source = pipeline.load_split(config.data, split, build=jax.process_index() == 0)
    steps = CompiledSteps(config, mesh, create_learning_rate_schedule(config))
    results_dir = os.path.join(workdir, "eval", f"{split}_step{step}")
    metrics, predictions = train.evaluate(steps, state, source, config, mesh, results_dir)
    if jax.process_index() == 0:
        steps.task.write_pictures(results_dir, source, predictions)
    return results_dir, metrics


FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines this command's flags where no other entry point of the process has (the
    entry points share `--workdir`; library use and tests import several)."""
    definitions = {
        "workdir": (flags.DEFINE_string, None, "A training work directory."),
        "split": (flags.DEFINE_string, "validation", "The split of the dataset to evaluate."),
        "step": (flags.DEFINE_integer, None, "The checkpoint's step (default: the newest)."),
    }
    for name, (define, default, help_text) in definitions.items():
        if name not in FLAGS:
            define(name, default, help_text)
    define_distributed_flags()


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the flags, `--config.a.b=v` overriding the run's own config (ml_collections'
    parser); a missing run or an override of a field it lacks exits with one line."""
    _define_flags()
    workdir = flag_value(argv, "workdir")
    if workdir is None:
        sys.exit("--workdir is required: the training run to evaluate.")
    try:
        config = trained_run.load_config(workdir)
    except trained_run.RunError as error:
        sys.exit(str(error))
    for name in [name for name in FLAGS if name == "config" or name.startswith("config.")]:
        delattr(FLAGS, name)  # defined by an earlier parse in this process (library use, tests)
    try:
        # Overrides are read from `argv` when the flag is defined.
        config_flags.DEFINE_config_dict("config", config, sys_argv=argv)
        return FLAGS(argv)
    except (KeyError, AttributeError):
        sys.exit(bad_override_message(config, argv))
    except flags.Error as error:
        sys.exit(f"Invalid flag: {error}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    join_if_distributed()
    try:
        results_dir, metrics = evaluate_checkpoint(
            FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.step
        )
    except ConfigError as error:
        sys.exit(f"Invalid config: {error}")
    except trained_run.RunError as error:
        sys.exit(str(error))
    if jax.process_index() == 0:
        print(f"{tasks.task_for(FLAGS.config).summary(metrics)}; written to {results_dir}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
