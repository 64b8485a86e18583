"""The flags by which a command joins a multi-process run (`jaxseg.main`, `jaxseg.evaluate`)."""

from absl import flags

DEFINITIONS = {
    "distributed": (
        flags.DEFINE_bool,
        False,
        "Join a multi-process run with jax.distributed.initialize(), letting JAX detect the "
        "cluster (SLURM, Open MPI, TPU pods, ...) unless the flags below are given.",
    ),
    "coordinator_address": (
        flags.DEFINE_string, None, "host:port of process 0 (multi-process runs)."
    ),
    "num_processes": (flags.DEFINE_integer, None, "Number of processes (multi-process runs)."),
    "process_id": (flags.DEFINE_integer, None, "This process's index in [0, num_processes)."),
}


def define_distributed_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines `--distributed`, `--coordinator_address`, `--num_processes` and
    `--process_id` where no other entry point of the process has."""
    for name, (define, default, help_text) in DEFINITIONS.items():
        if name not in flag_values:
            define(name, default, help_text, flag_values=flag_values)


def join_if_distributed(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Joins the multi-process run the parsed flags ask for (`sharding.initialize_distributed`);
    does nothing for a one-process run."""
    if flag_values.distributed or flag_values.coordinator_address:
        from jaxseg import sharding  # pylint: disable=g-import-not-at-top

        sharding.initialize_distributed(
            flag_values.coordinator_address, flag_values.num_processes, flag_values.process_id
        )
