"""Panoptic segmentation: Panoptic FPN's instances and semantic map fused into one panoptic
map per image (`jaxseg.ops.panoptic_fusion`), scored by PQ as panopticapi scores it
(`jaxseg.evaluation.panoptic`).

Categories of a panoptic dataset: the thing classes 1..K-1 of `config.data.class_names`
(the background first) keep their labels as ids; stuff class k >= 1 of
`config.data.stuff_class_names` (the thing class first) gets id K - 1 + k. A split is
scored on its canvases: the ground truth is each example's stuff labels and instance masks,
its ignore label VOID.
"""

import json
import os
from typing import Mapping

import jax
import numpy as np

from jaxseg import registry, sharding, visualize, visualize_panoptic
from jaxseg.data import folders, panoptic_format, storage
from jaxseg.errors import ConfigError
from jaxseg.evaluation.panoptic import PQAccumulator
from jaxseg.models.panoptic_fpn import PanopticFPN
from jaxseg.ops.panoptic_fusion import THING_LABEL, fuse_panoptic
from jaxseg.tasks.base import Evaluation
from jaxseg.tasks.instance import InstanceSegmentation, pasted_masks

HEADLINE = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")
PREDICTIONS = "panoptic_predictions"
GROUND_TRUTH = "panoptic_ground_truth"


def panoptic_categories(class_names, stuff_class_names) -> list[dict]:
    """COCO panoptic categories of the thing and stuff classes (module docstring)."""
    things = [{"id": label, "name": name, "isthing": 1} for label, name in enumerate(class_names) if label]
    offset = len(class_names) - 1
    stuff = [{"id": offset + k, "name": name, "isthing": 0} for k, name in enumerate(stuff_class_names) if k]
    return things + stuff


def ground_truth_map(example: Mapping[str, np.ndarray], ignore_label: int) -> tuple[np.ndarray, list[dict]]:
    """An example's panoptic ground truth: ids int64 [S, S] (0 = VOID) and segments ("id",
    "isthing", "label", "area"; stuff label k >= 1 of `semantic`, things from `masks` [n, S, S]
    and `labels` [n], later masks over earlier ones). Thing-labelled pixels outside every
    mask and `ignore_label` pixels are VOID."""
    semantic = np.asarray(example["semantic"])
    ids = np.zeros(semantic.shape, np.int64)
    segments = []
    for label in np.unique(semantic):
        if label in (THING_LABEL, ignore_label):
            continue
        segments.append({"id": len(segments) + 1, "isthing": False, "label": int(label)})
        ids[semantic == label] = len(segments)
    for mask, label in zip(example["masks"], example["labels"]):
        segments.append({"id": len(segments) + 1, "isthing": True, "label": int(label)})
        ids[mask.astype(bool)] = len(segments)
    areas = np.bincount(ids.ravel(), minlength=len(segments) + 1)
    for segment in segments:
        segment["area"] = int(areas[segment["id"]])
    return ids, [s for s in segments if s["area"] > 0]


@registry.TASKS.register("panoptic")
class PanopticSegmentation(InstanceSegmentation):
    """Panoptic FPN trained on the instance fields plus `semantic`, scored by PQ."""

    train_fields = InstanceSegmentation.train_fields + ("semantic",)
    curves = ("train/loss", "train/learning_rate", "val/pq", "val/pq_things", "val/pq_stuff")

    @staticmethod
    def check_config(config):
        """The data's ignore label (padding) must be the one the semantic loss leaves out."""
        data_ignore = config.data.get("ignore_label", folders.DEFAULT_IGNORE_LABEL)
        model_ignore = config.model.get("ignore_label", PanopticFPN.ignore_label)
        if data_ignore != model_ignore:
            raise ConfigError(
                f"config.data.ignore_label={data_ignore!r} must equal config.model.ignore_label="
                f"{model_ignore!r}: the padding of the images holds the data's ignore label."
            )

    def __init__(self, config):
        super().__init__(config)
        self.categories = panoptic_categories(config.data.class_names, config.data.stuff_class_names)

    def category_id(self, segment: dict) -> int:
        """The panoptic category id of a segment ("isthing", "label"; module docstring)."""
        return segment["label"] if segment["isthing"] else len(self.config.data.class_names) - 1 + segment["label"]

    def loss_inputs(self, batch) -> tuple:
        """Mask R-CNN's loss inputs and the semantic labels `[B, S, S]`: the loss is its five
        losses + `semantic_loss_weight` x the semantic loss (`PanopticFPN.losses`)."""
        return super().loss_inputs(batch) + (batch["semantic"],)

    def fuse(self, detections: Mapping[str, np.ndarray], masks: np.ndarray, semantic: np.ndarray):
        """One image's panoptic map (ids int32 [H, W], segments) from its detections, their
        binary masks bool [D, H, W] and its semantic labels [H, W], with the model's fusion
        thresholds."""
        return fuse_panoptic(
            masks, detections["scores"], detections["classes"], detections["valid"], semantic,
            score_threshold=self.model.instance_score_threshold,
            overlap_threshold=self.model.overlap_threshold,
            stuff_area_limit=self.model.stuff_area_limit,
        )

    def predict_panoptic(self, variables, image: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """The panoptic map (ids int32 [H, W], segments) of an RGB uint8 image `[H, W, 3]` of
        any size, in its pixels: instances as `predict_instances` maps them, the semantic
        map's valid region resized back by nearest neighbour."""
        found = self.predict_instances(variables, image)
        placement = folders.placement(image.shape[:2], self.config.data.image_size)
        return self.fuse(found, found["masks"], placement.label_map_to_image(found["semantic"]))

    def prediction_picture(self, variables, image):
        """The image beside its panoptic map (`visualize_panoptic.draw_panoptic`), above a
        legend of the stuff classes."""
        ids, segments = self.predict_panoptic(variables, image)
        stuff_names = list(self.config.data.stuff_class_names)
        panel = visualize_panoptic.draw_panoptic(ids, segments, stuff_names, list(self.config.data.class_names))
        grid = visualize.tile_grid([[image, panel]], ("image", "prediction"))
        entries = visualize_panoptic.legend_entries([(ids, segments)], stuff_names)
        return visualize.add_legend(grid, entries, caption=visualize_panoptic.CAPTION)

    def new_evaluation(self, source) -> Evaluation:
        return _PQEvaluation(self, source)

    def summary(self, metrics):
        return (
            f"val PQ {metrics['pq']:.4f} (things {metrics['pq_things']:.4f}, stuff "
            f"{metrics['pq_stuff']:.4f}), SQ {metrics['sq']:.4f}, RQ {metrics['rq']:.4f}"
        )

    def draw_predictions(self, path, examples, predictions):
        """Validation images, ground-truth and predicted panoptic maps."""
        ignore_label = self.model.ignore_label
        visualize_panoptic.save_panoptic_grid(
            path,
            np.stack([example["image"] for example in examples]),
            [ground_truth_map(example, ignore_label) for example in examples],
            predictions,
            list(self.config.data.stuff_class_names),
            list(self.config.data.class_names),
        )


class _PQEvaluation(Evaluation):
    """Fuses every valid example's outputs on its canvas, adds it to a `PQAccumulator`
    against the example's ground truth, and keeps both maps as COCO panoptic PNG bytes
    (for `write_results`) and the first few maps for pictures."""

    def __init__(self, task: PanopticSegmentation, source):
        self._task = task
        self._source = source
        self._accumulator = PQAccumulator(task.categories)
        self._files: dict[str, list] = {PREDICTIONS: [], GROUND_TRUTH: []}
        self._predictions: dict[int, tuple] = {}

    def _segments_info(self, segments: list[dict]) -> list[dict]:
        return [{"id": s["id"], "category_id": self._task.category_id(s), "iscrowd": 0, "area": s["area"]}
                for s in segments]

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        host = jax.tree.map(sharding.to_host, outputs)
        size = host["semantic"].shape[1:3]
        for row in np.flatnonzero(host["index"] >= 0):
            index = int(host["index"][row])
            image = {name: values[row] for name, values in host.items() if name != "index"}
            masks = pasted_masks(image["mask_probabilities"], image["boxes"], image["valid"], size,
                                 self._task.model.mask_threshold)
            ids, segments = self._task.fuse(image, masks, image["semantic"])
            gt_ids, gt_segments = ground_truth_map(self._source[index], self._task.model.ignore_label)
            gt_info, pred_info = self._segments_info(gt_segments), self._segments_info(segments)
            self._accumulator.add(gt_ids, gt_info, ids, pred_info, where=f"example {index}")
            for kind, values, info in ((GROUND_TRUTH, gt_ids, gt_info), (PREDICTIONS, ids, pred_info)):
                png = storage.png_bytes(panoptic_format.ids_to_rgb(values), compress_level=1)
                self._files[kind].append((index, png, info))
            if len(self._predictions) < self._task.config.num_prediction_images:
                self._predictions[index] = (ids, segments)

    def result(self):
        return self._accumulator.summary(), dict(self._predictions)

    def write_results(self, directory: str) -> None:
        """`panoptic_predictions.json` + `panoptic_predictions/<index>.png` and the same of
        the ground truth (`panoptic_ground_truth`), in COCO's panoptic format: what
        `jaxseg.evaluation.panoptic.evaluate_files` (or panopticapi) scores."""
        for kind, files in self._files.items():
            os.makedirs(os.path.join(directory, kind), exist_ok=True)
            annotations = []
            for index, png, info in sorted(files, key=lambda entry: entry[0]):
                name = f"{index:06d}.png"
                with open(os.path.join(directory, kind, name), "wb") as file:
                    file.write(png)
                annotations.append({"image_id": index, "file_name": name, "segments_info": info})
            panoptic_format.write_panoptic_json(os.path.join(directory, f"{kind}.json"), annotations,
                                                self._task.categories)
        with open(os.path.join(directory, "image_ids.json"), "w") as file:
            json.dump(sorted(index for index, _, _ in self._files[PREDICTIONS]), file)
