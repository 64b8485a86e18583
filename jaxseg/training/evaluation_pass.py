"""One evaluation pass over a split (the loop's validation and `jaxseg.evaluate`), the
eval step compiling ahead of it, and the strict-JSON metrics file both write."""

import concurrent.futures
import json
import math
import os
import sys
from typing import Any, Mapping, Optional

import jax
import ml_collections
from tqdm import tqdm

from jaxseg import sharding
from jaxseg.data import batching
from jaxseg.data.sources import checks
from jaxseg.training.feed import select_fields
from jaxseg.training.state import TrainState
from jaxseg.training.steps import CompiledSteps


def evaluate(
    steps: CompiledSteps,
    state: TrainState,
    source,
    config: ml_collections.ConfigDict,
    mesh,
    results_dir: Optional[str] = None,
) -> tuple[dict[str, float], dict[int, Any]]:
    """The task's metrics over the whole split `source`, in ordered padded batches.

    With `results_dir`, process 0 writes the metrics there as `metrics.json` with the
    task's raw results (`Evaluation.write_results`: `coco_results.json` and
    `image_ids.json`, or `confusion.csv`).

    Returns:
      The metrics (semantic: `miou`, `pixel_accuracy`, `mean_dice`, `iou/<class>`;
      instance: the COCO `box_ap*` and `mask_ap*`), and predictions of up to
      `config.num_prediction_images` of the examples this process evaluated, keyed by
      their index in `source`.
    """
    evaluation = steps.task.new_evaluation(source)
    batches = _eval_batches(
        steps, source, config, checks.num_workers_from_data_config(config.data)
    )
    progress = tqdm(
        total=len(source),
        disable=jax.process_index() != 0,
        desc="eval",
        unit="image",
        leave=False,
        dynamic_ncols=True,
    )
    evaluated = 0
    for batch in batches:
        outputs = steps.eval(
            state, sharding.shard_batch(select_fields(batch, steps.task.eval_fields), mesh)
        )
        evaluation.add(outputs, batch)
        evaluated += int((batch["index"] >= 0).sum())
        progress.update(min(config.eval_batch_size, len(source) - progress.n))
    progress.close()
    if jax.process_count() > 1:
        print(
            f"process {jax.process_index()}: post-processed {evaluated} of {len(source)} images",
            file=sys.stderr,
            flush=True,
        )
    metrics, predictions = evaluation.result()
    if results_dir is not None and jax.process_index() == 0:
        os.makedirs(results_dir, exist_ok=True)
        evaluation.write_results(results_dir)
        write_metrics(os.path.join(results_dir, "metrics.json"), metrics)
    return metrics, predictions


def _eval_batches(steps: CompiledSteps, source, config, num_workers: int):
    """This process's share of each ordered, padded evaluation batch of `source` (the task's
    eval and host fields), made by `num_workers` input processes."""
    return batching.eval_batches(
        source,
        config.eval_batch_size,
        max_instances=config.data.max_instances,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_workers=num_workers,
        fields=tuple(dict.fromkeys(steps.task.eval_fields + steps.task.host_fields)),
    )


def compile_eval_in_background(
    steps: CompiledSteps, state: TrainState, source, config, mesh
) -> concurrent.futures.Future:
    """Starts compiling `steps.eval` for `state` and `source`'s evaluation batches in a
    thread (`CompiledTogether.compile_in_background`); returns its future."""
    batches = _eval_batches(steps, source, config, num_workers=0)
    batch = select_fields(next(batches), steps.task.eval_fields)
    batches.close()
    return steps.eval.compile_in_background(state, sharding.shard_batch(batch, mesh))


def _json_value(value: Any) -> Any:
    """`value` with every non-finite float (an undefined metric) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(path: str, metrics: Mapping[str, Any]) -> None:
    """Writes a flat metrics dict as strict JSON: NaN and infinities become `null`."""
    with open(path, "w") as f:
        json.dump(
            {name: _json_value(value) for name, value in metrics.items()},
            f,
            indent=2,
            sort_keys=True,
            allow_nan=False,
        )
