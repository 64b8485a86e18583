"""Command line: `python -m jaxseg.main --config=configs/NAME.py --workdir=DIR [--config.a.b=v]`.

Flags are parsed here and everything else happens in
`jaxseg.train.train_and_evaluate`. A bad config value stops the run at once
with one line naming the field.
"""

import os
import sys
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxseg.cli.distributed_flags import define_distributed_flags, join_if_distributed
from jaxseg.config_files import bad_override_message, flag_value, load_config_file
from jaxseg.errors import ConfigError, WorkdirError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, metrics and pictures.")
flags.mark_flags_as_required(["workdir"])
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
define_distributed_flags()


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; a missing config file or an override of a config field that does not
    exist exits with one line."""
    try:
        remaining = FLAGS(argv)
    except (KeyError, AttributeError):
        config = load_config_file(flag_value(argv, "config"))
        sys.exit(bad_override_message(config, argv))
    except flags.Error as error:
        sys.exit(f"Invalid flag: {error}")
    config_path = config_flags.get_config_filename(FLAGS["config"])
    if config_path and not os.path.isfile(config_path):
        sys.exit(f"Config file {config_path} not found (--config={config_path}).")
    return remaining


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from jaxseg import train  # pylint: disable=g-import-not-at-top

    logging.set_verbosity(logging.WARNING)
    join_if_distributed()
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except ConfigError as error:
        sys.exit(f"Invalid config: {error}")
    except WorkdirError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
