"""Checkpointer: a checkpoint restores into a state of its own shape, and a mismatch is one line."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import sharding
from jaxseg.checkpointing import MIN_REPLICA_SLICE_BYTES, Checkpointer
from jaxseg.errors import WorkdirError
from tests.helpers.compile_count import counting_compiles


@pytest.fixture()
def saved(tmp_path):
    """A Checkpointer opened afresh on a directory another one saved step 7 into (as a
    resumed run, `evaluate` or `predict` open it)."""
    directory = str(tmp_path / "checkpoints")
    writer = Checkpointer(directory, max_to_keep=2, save_interval_steps=1)
    state = {"params": {"conv": jnp.arange(3.0), "norm": jnp.ones(2)}, "step": jnp.asarray(7)}
    writer.save(7, state, {"examples_seen": 28}, force=True)
    writer.close()
    reader = Checkpointer(directory, max_to_keep=2, save_interval_steps=1)
    yield reader
    reader.close()


def test_restore_gives_back_the_saved_arrays_and_record(saved):
    template = {"params": {"conv": jnp.zeros(3), "norm": jnp.zeros(2)}, "step": jnp.asarray(0)}
    state, meta = saved.restore(template)
    np.testing.assert_array_equal(state["params"]["conv"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(state["params"]["norm"], [1.0, 1.0])
    assert int(state["step"]) == 7 and meta == {"examples_seen": 28}


@pytest.mark.parametrize(
    "params, named",
    [
        ({"conv": jnp.zeros(3), "head": jnp.zeros(2)}, "in this run only: params.head"),
        ({"conv": jnp.zeros(3)}, "in the checkpoint only: params.norm"),
        ({"conv": jnp.zeros(4), "norm": jnp.zeros(2)}, "params.conv (3,) there, (4,) here"),
    ],
)
def test_another_models_state_is_a_one_line_error_naming_the_difference(saved, params, named):
    with pytest.raises(WorkdirError) as raised:
        saved.restore({"params": params, "step": jnp.asarray(0)})
    message = str(raised.value)
    assert "\n" not in message
    assert "checkpoint of step 7" in message and named in message


def test_small_replicated_arrays_are_saved_whole_without_compiling_and_large_ones_restore(tmp_path):
    """On 8 devices a replicated array under 8 x MIN_REPLICA_SLICE_BYTES is written by one
    replica: no slicing program is compiled (orbax compiled one per shape and device)."""
    mesh = sharding.create_mesh()
    assert mesh.devices.size == 8
    kernel = jnp.arange(48 * 3, dtype=jnp.float32).reshape(48, 3)
    small = sharding.replicate({"kernel": kernel}, mesh)
    large = sharding.replicate({"table": jnp.arange(MIN_REPLICA_SLICE_BYTES * 2, dtype=jnp.float32)}, mesh)
    checkpointer = Checkpointer(str(tmp_path), max_to_keep=2, save_interval_steps=1)
    try:
        with counting_compiles() as compiles:
            checkpointer.save(1, small, {}, force=True)
            checkpointer.wait_until_finished()
        assert compiles == []
        checkpointer.save(2, large, {}, force=True)
        checkpointer.wait_until_finished()
        restored_small, _ = checkpointer.restore(small, step=1)
        restored_large, _ = checkpointer.restore(large, step=2)
    finally:
        checkpointer.close()
    np.testing.assert_array_equal(restored_small["kernel"], np.arange(144).reshape(48, 3))
    np.testing.assert_array_equal(restored_large["table"], np.arange(MIN_REPLICA_SLICE_BYTES * 2))
