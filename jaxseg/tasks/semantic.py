"""Semantic segmentation: a per-pixel classifier (U-Net) scored by a confusion matrix."""

import os
from typing import Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import losses
from jaxseg import metrics as seg_metrics
from jaxseg import sharding
from jaxseg import visualize
from jaxseg.tasks.base import Evaluation, Task, save_samples


class SemanticSegmentation(Task):
    """Logits `[N, H, W, K]` trained with `config.loss.name` against `semantic` labels.

    Validation metrics: `miou`, `pixel_accuracy`, `mean_dice` and `iou/<class>`,
    from one confusion matrix summed over the split.
    """

    train_fields = ("image", "semantic")
    eval_fields = ("image", "semantic", "valid")
    curves = (
        "train/loss",
        "train/learning_rate",
        "val/miou",
        "val/mean_dice",
        "val/pixel_accuracy",
    )

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self._loss_fn = losses.make_loss_fn(config.loss.name, ignore_label=config.loss.ignore_label)

    def init_variables(self, rng, image_shape):
        return self.model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)

    def loss(self, variables, batch, rng):
        logits, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        loss, components = self._loss_fn(logits, batch["semantic"])
        return loss, components, updates.get("batch_stats", variables["batch_stats"])

    def eval_outputs(self, variables, batch):
        """Confusion matrix `[K, K]` (padding rows excluded) and predictions `[B, H, W]`."""
        logits = self.model.apply(variables, batch["image"], train=False)
        predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        confusion = seg_metrics.confusion_matrix(
            predictions,
            batch["semantic"],
            self.config.data.num_classes,
            ignore_label=self.config.loss.ignore_label,
            weights=batch["valid"],
        )
        return confusion, predictions

    def eval_out_shardings(self, mesh):
        return sharding.replicated(mesh), sharding.batch_sharded(mesh)

    def new_evaluation(self, source) -> Evaluation:
        return _ConfusionEvaluation(self.config)

    def summary(self, metrics):
        return (
            f"val mIoU {metrics['miou']:.4f}, pixel acc {metrics['pixel_accuracy']:.4f}, "
            f"mean Dice {metrics['mean_dice']:.4f}"
        )

    def write_pictures(self, workdir, source, predictions):
        """`predictions.png`: validation images, ground truth and predicted label maps."""
        if not predictions:
            return
        save_samples(workdir, source, predictions)
        examples = [source[index] for index in predictions]
        visualize.save_prediction_grid(
            os.path.join(workdir, "predictions.png"),
            np.stack([example["image"] for example in examples]),
            np.stack([example["semantic"] for example in examples]),
            np.stack(list(predictions.values())),
            class_names=list(self.config.data.class_names),
        )


class _ConfusionEvaluation(Evaluation):
    """Sums confusion matrices; keeps the first label maps `[H, W]` int32 this process saw."""

    def __init__(self, config: ml_collections.ConfigDict):
        self._config = config
        self._confusion = None
        self._predictions: dict[int, np.ndarray] = {}

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        confusion, predictions = outputs
        self._confusion = confusion if self._confusion is None else self._confusion + confusion
        if len(self._predictions) < self._config.num_prediction_images:
            local = np.concatenate(
                [np.asarray(shard.data) for shard in predictions.addressable_shards]
            )
            for row in np.flatnonzero(batch["valid"]):
                self._predictions[int(batch["index"][row])] = local[row]

    def result(self):
        summary = seg_metrics.segmentation_metrics(sharding.to_host(self._confusion))
        metrics = {
            "miou": float(summary["miou"]),
            "pixel_accuracy": float(summary["pixel_accuracy"]),
            "mean_dice": float(summary["mean_dice"]),
        }
        for name, iou in zip(self._config.data.class_names, summary["per_class_iou"]):
            metrics[f"iou/{name}"] = float(iou)
        kept = sorted(self._predictions)[: self._config.num_prediction_images]
        return metrics, {index: self._predictions[index] for index in kept}
