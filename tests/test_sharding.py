"""sharding.CompiledTogether: a program compiled in the background is the one later calls run."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import sharding
from tests.helpers.compile_count import counting_compiles


def test_a_program_compiled_in_the_background_is_reused_and_its_arrays_may_go():
    mesh = sharding.create_mesh()
    weighted_sum = sharding.CompiledTogether(
        jax.jit(lambda state, batch: (state["w"] * batch).sum(0), donate_argnums=0), "weighted_sum"
    )
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)

    def arguments():
        weights = sharding.replicate({"w": jnp.asarray([0.5, 1.0, 2.0])}, mesh)
        return weights, sharding.shard_batch({"x": rows}, mesh)["x"]

    (state, batch), later = arguments(), arguments()
    with counting_compiles() as compiles:
        future = weighted_sum.compile_in_background(state, batch)
        state["w"].delete()
        future.result()
        assert len(compiles) == 1
        result = weighted_sum(*later)
    assert len(compiles) == 1
    np.testing.assert_allclose(result, (rows * [0.5, 1.0, 2.0]).sum(0))
