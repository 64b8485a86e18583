"""Instance segmentation: Mask R-CNN scored by COCO box and mask AP (pycocotools), in the
dataset's own frame (`jaxseg.evaluation.frames`)."""

import functools
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import registry
from jaxseg import sharding
from jaxseg import visualize_instances
from jaxseg.data import batching, geometry
from jaxseg.evaluation import frames, worker_pool
from jaxseg.evaluation.coco import COCOEvaluator, write_results
from jaxseg.ops.flat_key import flat_key
from jaxseg.ops.mask_paste_host import paste_binary_mask
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

    Evaluation scores each split in its dataset's frame: the `instance_frame` its dataset
    kind registers (`registry.DATASETS`), else the canvas (`frames.canvas_frame`), built
    once per split. Detections are clipped to each image's extent on its canvas.
    """

    train_fields = ("image", "boxes", "labels", "packed_masks", "instance_valid")
    eval_fields = ("image", "image_hw", "index")
    curves = ("train/loss", "train/learning_rate", "val/box_ap", "val/mask_ap")

    def __init__(self, config):
        super().__init__(config)
        self._frames: dict[tuple[int, str], tuple] = {}
        self._detect = jax.jit(
            functools.partial(self.model.apply, method="detect", paste=False)
        )

    def init_variables(self, rng, image_shape):
        images = jnp.zeros((1, *image_shape), jnp.float32)
        return self.model.init(flat_key(rng), images, method="detect")

    def loss_inputs(self, batch) -> tuple:
        """The positional arguments of the model's `losses` from a training batch."""
        masks = batching.unpack_masks(batch["packed_masks"], batch["image"].shape[2])
        return batch["image"], batch["boxes"], batch["labels"], masks, batch["instance_valid"]

    def loss(self, variables, batch, rng):
        """The model's `total` loss (Mask R-CNN: the sum of its five); the other losses are
        the components (`rpn_objectness`, ..., `mask`)."""
        losses, updates = self.model.apply(
            variables,
            *self.loss_inputs(batch),
            train=True,
            method="losses",
            rngs={"sampling": rng},
            mutable=["batch_stats"],
        )
        components = {name: value for name, value in losses.items() if name != "total"}
        return losses["total"], components, updates.get("batch_stats", variables["batch_stats"])

    def eval_outputs(self, variables, batch):
        """The batch's detections (`MaskRCNN.detect(..., paste=False)`: `mask_probabilities
        [B, D, M, M]`, no full-size masks) and its `index`."""
        detections = self.model.apply(
            variables, batch["image"], batch["image_hw"], paste=False, method="detect"
        )
        detections["index"] = batch["index"]
        return detections

    def predict_instances(self, variables, image: np.ndarray) -> dict[str, np.ndarray]:
        """Detections of an RGB uint8 image `[H, W, 3]` of any size, in its pixels.

        The image is prepared as the data pipeline does (`model_input`); the detections
        are mapped back as evaluation maps them (`frames.image_results`): boxes scaled back
        and clipped to the image, masks pasted at the scaled boxes in the image's pixels
        and binarized at the model's `mask_threshold`.

        Returns:
          `boxes [D, 4]` float32 (x1, y1, x2, y2), `scores [D]` float32, `classes [D]`
          int32, `masks [D, H, W]` bool (all False for invalid slots), `valid [D]` bool.
        """
        inputs, placement = model_input(image, geometry.fit_of(self.config.data))
        image_hw = np.array([[placement.valid_height, placement.valid_width]], np.int32)
        detections = jax.tree.map(
            lambda x: np.asarray(x[0]), self._detect(variables, inputs, image_hw)
        )
        boxes = placement.boxes_to_image(detections["boxes"])
        probabilities = detections.pop("mask_probabilities")
        masks = pasted_masks(probabilities, boxes, detections["valid"], image.shape[:2],
                              self.model.mask_threshold)
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
        """Split over the batch like the batch: each process maps back, pastes and encodes
        only the rows it fed (`Evaluation.add`)."""
        return sharding.batch_sharded(mesh)

    def split_frame(self, source, attribute: str, canvas: Callable[[], Any]):
        """The frame of kind `attribute` that `source` (a split) is scored in: built by the
        builder its dataset kind registers under `attribute` (`registry.DATASETS`), else
        `canvas()`; built on first use, then cached for the split."""
        key = (id(source), attribute)
        if key not in self._frames:
            build = registry.DATASETS.get(self.config.data.name).attributes.get(attribute)
            frame = canvas() if build is None else build(self.config.data, source)
            self._frames[key] = (source, frame)
        return self._frames[key][1]

    def frame(self, source) -> frames.InstanceFrame:
        """The COCO frame `source` (a split) is scored in (`split_frame`)."""
        class_names = self.config.data.class_names
        return self.split_frame(
            source, "instance_frame", lambda: frames.canvas_frame(source, class_names)
        )

    @property
    def eval_workers(self) -> int:
        """`config.eval_workers` (0 in a run's config written before the field existed)."""
        return self.config.get("eval_workers", 0)

    @functools.cached_property
    def eval_pool(self):
        """The `eval_workers` processes of every evaluation pass of the run (None: 0)."""
        return worker_pool.process_pool(self.eval_workers)

    def new_evaluation(self, source) -> Evaluation:
        work = worker_pool.OrderedWork(frames.image_results, self.eval_pool, self.eval_workers)
        return _COCOEvaluation(
            self.frame(source), self.model.mask_threshold, self.config.num_prediction_images,
            work, self.config.get("eval_scorer", "pycocotools"),
        )

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
    """Maps every valid example's detections into its frame (`frames.image_results`, in
    `work`'s worker processes) and feeds them to a `COCOEvaluator` in the split's order;
    keeps the first few on their canvases for pictures."""

    def __init__(
        self,
        frame: frames.InstanceFrame,
        mask_threshold: float,
        num_kept: int,
        work: worker_pool.OrderedWork,
        scorer: str,
    ):
        self._frame = frame
        self._evaluator = COCOEvaluator(
            frame.ground_truth, frame.scored_image_ids, frame.ground_truth_index(scorer), scorer
        )
        self._mask_threshold = mask_threshold
        self._num_kept = num_kept
        self._work = work
        self._predictions: dict[int, dict[str, np.ndarray]] = {}

    def _add_found(self, found: list[frames.FrameDetections]) -> None:
        for image in found:
            self._evaluator.add(
                image.image_id, image.boxes, image.scores, image.category_ids, rles=image.rles
            )

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        detections = sharding.to_host_rows(outputs)
        for row in np.flatnonzero(detections["index"] >= 0):
            index = int(detections["index"][row])
            image = {name: values[row] for name, values in detections.items() if name != "index"}
            self._add_found(self._work.submit(
                self._frame.placements[index], self._frame.image_ids[index],
                self._frame.category_ids, image, self._mask_threshold,
            ))
            if len(self._predictions) < self._num_kept:
                self._predictions[index] = _on_canvas(image, self._mask_threshold, batch)

    def result(self):
        """Process 0 gathers every process's results and scores them; all get the metrics."""
        self._add_found(self._work.drain())
        shares = sharding.gather_objects(self._evaluator.collected())
        metrics = None
        if jax.process_index() == 0:
            for share in shares[1:]:
                self._evaluator.merge(share)
            scores = self._evaluator.evaluate()
            metrics = {name: scores[name] for name in COCO_METRICS}
        return sharding.from_first_process(metrics), dict(self._predictions)

    def write_results(self, directory: str) -> None:
        """`coco_results.json` (COCO results, pycocotools' `loadRes` reads it; score masks
        without the "bbox", as detectron2 does) and `image_ids.json` (the evaluated images,
        pycocotools' `params.imgIds`): on process 0, every process's after `result`."""
        write_results(os.path.join(directory, "coco_results.json"), self._evaluator.results())
        with open(os.path.join(directory, "image_ids.json"), "w") as file:
            json.dump(self._evaluator.image_ids, file)


def pasted_masks(probabilities, boxes, valid, image_hw, mask_threshold) -> np.ndarray:
    """bool [D, H, W]: each valid detection's M x M mask `probabilities [D, M, M]` pasted at
    its box (`boxes [D, 4]` in the H x W image's pixels) and binarized; False elsewhere."""
    masks = np.zeros((len(valid), *image_hw), bool)
    for slot in np.flatnonzero(valid):
        masks[slot] = paste_binary_mask(probabilities[slot], boxes[slot], *image_hw, mask_threshold)
    return masks


def _on_canvas(image: dict, mask_threshold: float, batch) -> dict[str, np.ndarray]:
    """One image's detections with `masks [D, S, S]` bool pasted on its canvas (pictures)."""
    kept = {name: value for name, value in image.items() if name != "mask_probabilities"}
    size = batch["image"].shape[1:3]
    masks = pasted_masks(image["mask_probabilities"], image["boxes"], image["valid"], size,
                          mask_threshold)
    return {**kept, "masks": masks}
