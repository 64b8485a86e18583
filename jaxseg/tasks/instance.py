"""Instance segmentation: Mask R-CNN scored by COCO box and mask AP (pycocotools)."""

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import registry
from jaxseg import sharding
from jaxseg import visualize_instances
from jaxseg.evaluation.coco import COCOEvaluator, ground_truth_to_coco
from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.tasks.base import Evaluation, Task, model_input

# The six COCO APs of each of boxes and masks; `metrics.json` holds all twelve.
COCO_METRICS = tuple(
    f"{kind}_ap{suffix}"
    for kind in ("box", "mask")
    for suffix in ("", "50", "75", "_small", "_medium", "_large")
)
# Predictions drawn in `predictions.png` need at least this score.
PICTURE_SCORE_THRESHOLD = 0.5


@registry.TASKS.register("instance")
class InstanceSegmentation(Task):
    """Mask R-CNN trained on padded instance fields, evaluated with COCO AP.

    The validation ground truth is converted to COCO format once per split (all of an
    example's instances, never truncated to `config.data.max_instances`); image ids
    are the examples' indices in the split.
    """

    train_fields = ("image", "boxes", "labels", "masks", "instance_valid")
    eval_fields = ("image", "index")
    curves = ("train/loss", "train/learning_rate", "val/box_ap", "val/mask_ap")

    def __init__(self, config):
        super().__init__(config)
        self._ground_truths: dict[int, tuple] = {}
        self._detect = jax.jit(functools.partial(self.model.apply, method=MaskRCNN.detect))

    def init_variables(self, rng, image_shape):
        images = jnp.zeros((1, *image_shape), jnp.float32)
        return self.model.init(rng, images, method=MaskRCNN.detect)

    def loss(self, variables, batch, rng):
        """Sum of the five Mask R-CNN losses; components `rpn_objectness`, ..., `mask`."""
        losses, updates = self.model.apply(
            variables,
            batch["image"],
            batch["boxes"],
            batch["labels"],
            batch["masks"],
            batch["instance_valid"],
            train=True,
            method=MaskRCNN.losses,
            rngs={"sampling": rng},
            mutable=["batch_stats"],
        )
        components = {name: value for name, value in losses.items() if name != "total"}
        return losses["total"], components, updates.get("batch_stats", variables["batch_stats"])

    def eval_outputs(self, variables, batch):
        """Detections of the batch (masks binarized to bool `[B, D, H, W]`) and its `index`."""
        detections = self.model.apply(variables, batch["image"], method=MaskRCNN.detect)
        detections["masks"] = detections["masks"] >= self.model.mask_threshold
        detections["index"] = batch["index"]
        return detections

    def predict_instances(self, variables, image: np.ndarray) -> dict[str, np.ndarray]:
        """Detections of an RGB uint8 image `[H, W, 3]` of any size, in its pixels.

        The image is prepared as the data pipeline does (`model_input`); boxes are scaled
        back (and clipped to the image) and the valid region of the mask probabilities
        resized back (bilinear) before binarizing at the model's `mask_threshold`.

        Returns:
          `boxes [D, 4]` float32 (x1, y1, x2, y2), `scores [D]` float32, `classes [D]`
          int32, `masks [D, H, W]` bool (all False for invalid slots), `valid [D]` bool.
        """
        inputs, placement = model_input(image, self.config.data.image_size)
        detections = jax.tree.map(lambda x: np.asarray(x[0]), self._detect(variables, inputs))
        masks = np.zeros((len(detections["valid"]), *image.shape[:2]), bool)
        for slot in np.flatnonzero(detections["valid"]):
            probabilities = placement.probabilities_to_image(detections["masks"][slot])
            masks[slot] = probabilities >= self.model.mask_threshold
        boxes = placement.boxes_to_image(detections["boxes"])
        return {**detections, "boxes": boxes, "masks": masks}

    def prediction_picture(self, variables, image):
        """`[H, W, 3]`: the detections with a score of at least `PICTURE_SCORE_THRESHOLD`
        drawn on the image (`visualize_instances.draw_instances`)."""
        found = self.predict_instances(variables, image)
        return visualize_instances.draw_instances(
            image,
            found["boxes"],
            found["scores"],
            found["classes"],
            found["masks"],
            found["valid"],
            list(self.config.data.class_names),
            score_threshold=PICTURE_SCORE_THRESHOLD,
        )

    def eval_out_shardings(self, mesh):
        return sharding.replicated(mesh)

    def ground_truth(self, source) -> dict:
        """The COCO-format ground truth of `source` (converted on first use, then cached)."""
        key = id(source)
        if key not in self._ground_truths:
            examples = (source[index] for index in range(len(source)))
            coco = ground_truth_to_coco(examples, self.config.data.class_names)
            self._ground_truths[key] = (source, coco)
        return self._ground_truths[key][1]

    def new_evaluation(self, source) -> Evaluation:
        return _COCOEvaluation(self.ground_truth(source), self.config.num_prediction_images)

    def summary(self, metrics):
        return (
            f"val box AP {metrics['box_ap']:.4f} (AP50 {metrics['box_ap50']:.4f}), "
            f"mask AP {metrics['mask_ap']:.4f} (AP50 {metrics['mask_ap50']:.4f})"
        )

    def draw_predictions(self, path, examples, predictions):
        """Validation images, ground-truth and predicted instances."""
        visualize_instances.save_instance_grid(
            path,
            np.stack([example["image"] for example in examples]),
            examples,
            predictions,
            class_names=list(self.config.data.class_names),
            score_threshold=PICTURE_SCORE_THRESHOLD,
        )


class _COCOEvaluation(Evaluation):
    """Feeds every valid example's detections to a `COCOEvaluator`; keeps the first few."""

    def __init__(self, ground_truth: dict, num_kept: int):
        self._evaluator = COCOEvaluator(ground_truth)
        self._num_kept = num_kept
        self._predictions: dict[int, dict[str, np.ndarray]] = {}

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        detections = jax.tree.map(sharding.to_host, outputs)
        for row in np.flatnonzero(detections["index"] >= 0):
            index = int(detections["index"][row])
            image = {name: values[row] for name, values in detections.items() if name != "index"}
            self._evaluator.add(
                index,
                image["boxes"],
                image["scores"],
                image["classes"],
                masks=image["masks"],
                valid=image["valid"],
            )
            if len(self._predictions) < self._num_kept:
                self._predictions[index] = image

    def result(self):
        metrics = self._evaluator.evaluate()
        return {name: metrics[name] for name in COCO_METRICS}, dict(self._predictions)
