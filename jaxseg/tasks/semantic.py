"""Semantic segmentation: a per-pixel classifier (U-Net) scored by pixel and boundary counts."""

import csv
import functools
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import losses
from jaxseg import metrics as seg_metrics
from jaxseg import registry
from jaxseg import schema
from jaxseg import sharding
from jaxseg import visualize
from jaxseg.data import geometry
from jaxseg.ops.flat_key import flat_key
from jaxseg.tasks.base import Evaluation, Task, model_input


@registry.TASKS.register("semantic")
class SemanticSegmentation(Task):
    """Logits `[N, H, W, K]` trained with `config.loss.name` against `semantic` labels.

    Validation metrics: `miou`, `pixel_accuracy`, `mean_dice`, `iou/<class>` and
    `dice/<class>` from one confusion matrix summed over the split; `boundary_iou` and
    `boundary_iou/<class>` from boundary-band counts summed over the split, with bands
    `config.boundary_width` pixels wide (default `DEFAULT_BOUNDARY_WIDTH`).
    """

    DEFAULT_BOUNDARY_WIDTH = 2

    train_fields = ("image", "semantic")
    eval_fields = ("image", "semantic", "valid")
    curves = (
        "train/loss",
        "train/learning_rate",
        "val/miou",
        "val/mean_dice",
        "val/pixel_accuracy",
    )

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        """The `loss` section (`losses.LossConfig`)."""
        schema.read_section(losses.LossConfig, config, "loss")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self._loss_fn = losses.make_loss_fn(config.loss.name, ignore_label=config.loss.ignore_label)
        self._boundary_width = config.get("boundary_width", self.DEFAULT_BOUNDARY_WIDTH)
        self.logits = jax.jit(functools.partial(self.model.apply, train=False))
        """`logits(variables, images [N, H, W, 3]) -> [N, H, W, K]` float32, jitted."""

    def predict_label_map(self, variables, image: np.ndarray) -> np.ndarray:
        """Per-pixel class ids `[H, W]` int32 of an RGB uint8 image `[H, W, 3]` of any size.

        The image is prepared as the data pipeline does (`model_input`); the prediction's
        valid region is resized back (nearest) to the image's own size.
        """
        inputs, placement = model_input(image, geometry.fit_of(self.config.data))
        logits = self.logits(variables, inputs)
        return placement.label_map_to_image(np.asarray(jnp.argmax(logits[0], axis=-1), np.int32))

    def prediction_picture(self, variables, image):
        """The image beside its predicted label map in opaque class colours
        (`visualize.tile_grid`), above a legend of the classes predicted
        (`visualize.add_legend`): `[24 + H + 20·rows, 2·W + 12, 3]`, wider when a legend
        entry is."""
        label_map = self.predict_label_map(variables, image)
        class_names = list(self.config.data.class_names)
        palette = visualize.class_palette(len(class_names))
        panels = visualize.tile_grid(
            [[image, visualize.colour_label_map(label_map, palette)]], ("image", "prediction")
        )
        entries = visualize.legend_entries([label_map], palette, class_names)
        return visualize.add_legend(panels, entries)

    def init_variables(self, rng, image_shape):
        return self.model.init(flat_key(rng), jnp.zeros((1, *image_shape), jnp.float32), train=False)

    def loss(self, variables, batch, rng):
        logits, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"], rngs={"dropout": flat_key(rng)}
        )
        loss, components = self._loss_fn(logits, batch["semantic"])
        return loss, components, updates.get("batch_stats", variables["batch_stats"])

    def eval_outputs(self, variables, batch):
        """Pixel counts of the batch (padding rows excluded) and predictions `[B, H, W]` int32.

        The counts are a dict of int32 arrays: `confusion` `[K, K]` and the Boundary IoU
        `boundary_intersection` and `boundary_union` `[K]` (see `metrics.boundary_counts`).
        """
        logits = self.model.apply(variables, batch["image"], train=False)
        predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        counted = {
            "labels": batch["semantic"],
            "num_classes": self.config.data.num_classes,
            "ignore_label": self.config.loss.ignore_label,
            "weights": batch["valid"],
        }
        intersection, union = seg_metrics.boundary_counts(
            predictions, width=self._boundary_width, **counted
        )
        counts = {
            "confusion": seg_metrics.confusion_matrix(predictions, **counted),
            "boundary_intersection": intersection,
            "boundary_union": union,
        }
        return counts, predictions

    def eval_out_shardings(self, mesh):
        return sharding.replicated(mesh), sharding.batch_sharded(mesh)

    def new_evaluation(self, source) -> Evaluation:
        return _ConfusionEvaluation(self.config)

    def summary(self, metrics):
        return (
            f"val mIoU {metrics['miou']:.4f}, pixel acc {metrics['pixel_accuracy']:.4f}, "
            f"mean Dice {metrics['mean_dice']:.4f}"
        )

    def draw_predictions(self, path, examples, predictions):
        """Validation images, ground truth and predicted label maps."""
        visualize.save_prediction_grid(
            path,
            np.stack([example["image"] for example in examples]),
            np.stack([example["semantic"] for example in examples]),
            np.stack(predictions),
            class_names=list(self.config.data.class_names),
        )


class _ConfusionEvaluation(Evaluation):
    """Sums the pixel counts; keeps the first label maps `[H, W]` int32 this process saw."""

    def __init__(self, config: ml_collections.ConfigDict):
        self._config = config
        self._counts = None
        self._predictions: dict[int, np.ndarray] = {}

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        counts, predictions = outputs
        self._counts = (
            counts if self._counts is None else jax.tree.map(jnp.add, self._counts, counts)
        )
        if len(self._predictions) < self._config.num_prediction_images:
            local = np.concatenate(
                [np.asarray(shard.data) for shard in predictions.addressable_shards]
            )
            for row in np.flatnonzero(batch["valid"]):
                self._predictions[int(batch["index"][row])] = local[row]

    def result(self):
        counts = {name: sharding.to_host(value) for name, value in self._counts.items()}
        summary = seg_metrics.segmentation_metrics(counts["confusion"])
        boundary = seg_metrics.boundary_iou(
            counts["boundary_intersection"], counts["boundary_union"]
        )
        metrics = {
            "miou": summary["miou"],
            "pixel_accuracy": summary["pixel_accuracy"],
            "mean_dice": summary["mean_dice"],
            "boundary_iou": boundary["boundary_iou"],
        }
        per_class = {
            "iou": summary["per_class_iou"],
            "dice": summary["per_class_dice"],
            "boundary_iou": boundary["per_class_boundary_iou"],
        }
        for metric, values in per_class.items():
            for name, value in zip(self._config.data.class_names, values):
                metrics[f"{metric}/{name}"] = value
        kept = sorted(self._predictions)[: self._config.num_prediction_images]
        return metrics, {index: self._predictions[index] for index in kept}

    def write_results(self, directory: str) -> None:
        """`confusion.csv`: the split's pixel counts, a row per true class and a column per
        predicted class, both headed by the class names (ignored pixels not counted)."""
        confusion = np.asarray(sharding.to_host(self._counts["confusion"]), np.int64)
        names = [str(name) for name in self._config.data.class_names]
        with open(os.path.join(directory, "confusion.csv"), "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["true \\ predicted", *names])
            for name, row in zip(names, confusion):
                writer.writerow([name, *row.tolist()])
