"""Training batches as the loop takes them: made by the input workers, sharded onto the mesh."""

from typing import Iterator, Mapping

import jax
import numpy as np

from jaxseg import sharding
from jaxseg.data import batching, pipeline
from jaxseg.data.sources import checks


def select_fields(batch: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The fields `names` of `batch`."""
    return {name: batch[name] for name in names}


def device_batches(
    config, source, start_step: int, fields: tuple[str, ...], mesh
) -> Iterator[dict[str, jax.Array]]:
    """The training batches from `start_step` on, as the training loop takes them: this
    process's rows of each global batch, flipped and augmented as `config.data` says, made
    ahead by `config.data.num_workers` processes (`batching.train_batches`, making only
    `fields`), sharded over `mesh`'s devices (`[B_global, ...]` arrays)."""
    batches = batching.train_batches(
        source,
        config.batch_size,
        config.seed,
        start_step,
        flip=config.data.flip,
        augmentation=pipeline.augmentation_from_data_config(config.data),
        max_instances=config.data.max_instances,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_workers=checks.num_workers_from_data_config(config.data),
        fields=fields,
    )
    return (sharding.shard_batch(select_fields(batch, fields), mesh) for batch in batches)
