"""Panoptic segmentation: Panoptic FPN's instances and semantic map fused into one panoptic
map per image (`jaxseg.ops.panoptic_fusion`), scored by PQ as panopticapi scores it
(`jaxseg.evaluation.panoptic`) in the split's frame (`jaxseg.evaluation.panoptic_frames`:
the dataset's own categories, pixels and ground truth where its kind registers a
`panoptic_frame`, else the canvas).
"""

import json
import os
from typing import Mapping

import jax
import numpy as np

from jaxseg import registry, sharding, visualize, visualize_panoptic
from jaxseg.data import folders, geometry, panoptic_format, storage
from jaxseg.errors import ConfigError
from jaxseg.evaluation import panoptic_frames
from jaxseg.evaluation.panoptic import ImageCounts, PQAccumulator
from jaxseg.models.panoptic_fpn import PanopticFPN
from jaxseg.ops.panoptic_fusion import fuse_panoptic
from jaxseg.tasks.base import Evaluation
from jaxseg.tasks.instance import InstanceSegmentation, pasted_masks

PREDICTIONS = "panoptic_predictions"
GROUND_TRUTH = "panoptic_ground_truth"


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

    def panoptic_frame(self, source) -> panoptic_frames.PanopticFrame:
        """The panoptic frame `source` (a split) is scored in (`split_frame`)."""
        data = self.config.data
        return self.split_frame(
            source,
            "panoptic_frame",
            lambda: panoptic_frames.canvas_frame(
                source, data.class_names, data.stuff_class_names, self.model.ignore_label
            ),
        )

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
        placement = geometry.placement(image.shape[:2], geometry.fit_of(self.config.data))
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
        return _PQEvaluation(self, self.panoptic_frame(source))

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
            [panoptic_frames.example_ground_truth(example, ignore_label) for example in examples],
            predictions,
            list(self.config.data.stuff_class_names),
            list(self.config.data.class_names),
        )


class _PQEvaluation(Evaluation):
    """Fuses every valid example's outputs in its frame (masks pasted at the frame's size,
    the semantic map resized back), counts its PQ share against the frame's ground truth
    (`PQAccumulator.count`) and keeps both maps as COCO panoptic PNG bytes (for
    `write_results`); keeps the first few maps fused on their canvases for pictures. Each
    process does this for the rows it fed; `result` gathers the shares on process 0."""

    def __init__(self, task: PanopticSegmentation, frame: panoptic_frames.PanopticFrame):
        self._task = task
        self._frame = frame
        self._accumulator = PQAccumulator(frame.categories)
        # Per example index: its PQ share, and its (image id, PNG, segments_info) per kind.
        self._counts: dict[int, ImageCounts] = {}
        self._files: dict[int, dict[str, tuple]] = {}
        self._predictions: dict[int, tuple] = {}

    def _segments_info(self, segments: list[dict]) -> list[dict]:
        return [{"id": s["id"], "category_id": self._frame.category_id(s), "iscrowd": 0, "area": s["area"]}
                for s in segments]

    def _fused(self, image: Mapping[str, np.ndarray], placement: geometry.Placement):
        boxes = placement.boxes_to_image(image["boxes"])
        masks = pasted_masks(image["mask_probabilities"], boxes, image["valid"], (placement.height, placement.width),
                             self._task.model.mask_threshold)
        return self._task.fuse(image, masks, placement.label_map_to_image(image["semantic"]))

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        host = sharding.to_host_rows(outputs)
        size = host["semantic"].shape[1]
        canvas = geometry.Placement(size, size, size, size)
        for row in np.flatnonzero(host["index"] >= 0):
            index = int(host["index"][row])
            image = {name: values[row] for name, values in host.items() if name != "index"}
            ids, segments = self._fused(image, self._frame.placements[index])
            gt_ids, gt_info = self._frame.ground_truth(index)
            pred_info = self._segments_info(segments)
            self._counts[index] = self._accumulator.count(
                gt_ids, gt_info, ids, pred_info, where=f"example {index}"
            )
            self._files[index] = {
                kind: (self._frame.image_ids[index],
                       storage.png_bytes(panoptic_format.ids_to_rgb(values), compress_level=1), info)
                for kind, values, info in ((GROUND_TRUTH, gt_ids, gt_info), (PREDICTIONS, ids, pred_info))
            }
            if len(self._predictions) < self._task.config.num_prediction_images:
                self._predictions[index] = self._fused(image, canvas)

    def result(self):
        """Process 0 gathers every process's shares and adds them in the split's order (the
        sums of one process, to the bit); all get the metrics."""
        shares = sharding.gather_objects((self._counts, self._files))
        metrics = None
        if jax.process_index() == 0:
            for counts, files in shares[1:]:
                self._counts.update(counts)
                self._files.update(files)
            for index in sorted(self._counts):
                self._accumulator.add_counts(self._counts[index])
            metrics = self._accumulator.summary()
        return sharding.from_first_process(metrics), dict(self._predictions)

    def write_results(self, directory: str) -> None:
        """`panoptic_predictions.json` + `panoptic_predictions/<image id>.png` and the same of
        the ground truth (`panoptic_ground_truth`), in COCO's panoptic format with the
        frame's image and category ids: what `jaxseg.evaluation.panoptic.evaluate_files`
        (or panopticapi) scores. On process 0, every process's after `result`."""
        ordered = [self._files[index] for index in sorted(self._files)]
        for kind in (PREDICTIONS, GROUND_TRUTH):
            os.makedirs(os.path.join(directory, kind), exist_ok=True)
            annotations = []
            for image_id, png, info in (files[kind] for files in ordered):
                name = f"{image_id}.png"
                with open(os.path.join(directory, kind, name), "wb") as file:
                    file.write(png)
                annotations.append({"image_id": image_id, "file_name": name, "segments_info": info})
            panoptic_format.write_panoptic_json(os.path.join(directory, f"{kind}.json"), annotations,
                                                self._frame.categories)
        with open(os.path.join(directory, "image_ids.json"), "w") as file:
            json.dump([files[PREDICTIONS][0] for files in ordered], file)
