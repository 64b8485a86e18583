"""Panoptic segmentation: Panoptic FPN's instances and semantic map fused into one panoptic
map per image (`jaxseg.ops.panoptic_fusion`), scored by PQ as panopticapi scores it
(`jaxseg.evaluation.panoptic`) in the split's frame (`jaxseg.evaluation.panoptic_frames`:
the dataset's own categories, pixels and ground truth where its kind registers a
`panoptic_frame`, else the canvas).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import jax
import numpy as np

from jaxseg import registry, sharding, visualize, visualize_panoptic
from jaxseg.data import folders, geometry, panoptic_format, storage
from jaxseg.errors import ConfigError
from jaxseg.evaluation import panoptic_frames, worker_pool
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
        thresholds (`ImageFusion.fuse`)."""
        return self.image_fusion().fuse(detections, masks, semantic)

    def image_fusion(self, frame: panoptic_frames.PanopticFrame | None = None) -> "ImageFusion":
        """The model's fusion settings, with `frame`'s categories when given."""
        model = self.model
        return ImageFusion(
            mask_threshold=model.mask_threshold,
            score_threshold=model.instance_score_threshold,
            overlap_threshold=model.overlap_threshold,
            stuff_area_limit=model.stuff_area_limit,
            categories=None if frame is None else frame.categories,
            thing_ids=None if frame is None else frame.thing_ids,
            stuff_ids=None if frame is None else frame.stuff_ids,
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
        frame = self.panoptic_frame(source)
        fusion = self.image_fusion(frame)
        work = worker_pool.OrderedWork(fusion.share, self.eval_pool, self.eval_workers)
        return _PQEvaluation(frame, fusion, work, self.config.num_prediction_images)

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


@dataclasses.dataclass(frozen=True)
class ImageFusion:
    """What fusing and counting one image needs, small enough to send to a worker process:
    the model's thresholds and (for `share`) the frame's categories and category ids."""

    mask_threshold: float
    score_threshold: float
    overlap_threshold: float
    stuff_area_limit: int
    categories: list[dict] | None = None
    thing_ids: tuple[int, ...] | None = None
    stuff_ids: tuple[int, ...] | None = None

    def fuse(self, detections: Mapping[str, np.ndarray], masks: np.ndarray, semantic: np.ndarray):
        """As `PanopticSegmentation.fuse`."""
        return fuse_panoptic(
            masks, detections["scores"], detections["classes"], detections["valid"], semantic,
            score_threshold=self.score_threshold,
            overlap_threshold=self.overlap_threshold,
            stuff_area_limit=self.stuff_area_limit,
        )

    def fused(self, image: Mapping[str, np.ndarray], placement: geometry.Placement):
        """One image's eval outputs fused at `placement`'s image size: masks pasted at the
        scaled boxes, the semantic map's valid region resized back (ids, segments)."""
        boxes = placement.boxes_to_image(image["boxes"])
        masks = pasted_masks(image["mask_probabilities"], boxes, image["valid"],
                             (placement.height, placement.width), self.mask_threshold)
        return self.fuse(image, masks, placement.label_map_to_image(image["semantic"]))

    def share(self, image, placement, ground_truth, image_id, index: int):
        """One example's PQ share (`PQAccumulator.count`) and its ground truth and predicted
        maps as (image id, COCO panoptic PNG bytes, segments_info) per kind: `image` its eval
        outputs, `ground_truth` its (ids [h, w], segments_info) in the frame."""
        ids, segments = self.fused(image, placement)
        info = [{"id": s["id"],
                 "category_id": panoptic_frames.segment_category_id(self.thing_ids, self.stuff_ids, s),
                 "iscrowd": 0, "area": s["area"]}
                for s in segments]
        gt_ids, gt_info = ground_truth
        counts = PQAccumulator(self.categories).count(gt_ids, gt_info, ids, info, where=f"example {index}")
        files = {
            kind: (image_id, storage.png_bytes(panoptic_format.ids_to_rgb(values), compress_level=1), segments_info)
            for kind, values, segments_info in ((GROUND_TRUTH, gt_ids, gt_info), (PREDICTIONS, ids, info))
        }
        return index, counts, files


class _PQEvaluation(Evaluation):
    """Fuses every valid example's outputs in its frame and counts its PQ share against the
    frame's ground truth, keeping both maps as COCO panoptic PNG bytes (`ImageFusion.share`,
    in `work`'s worker processes); keeps the first few maps fused on their canvases for
    pictures. Each process does this for the rows it fed; `result` gathers the shares on
    process 0."""

    def __init__(self, frame: panoptic_frames.PanopticFrame, fusion: ImageFusion,
                 work: worker_pool.OrderedWork, num_kept: int):
        self._frame = frame
        self._fusion = fusion
        self._work = work
        self._num_kept = num_kept
        self._accumulator = PQAccumulator(frame.categories)
        # Per example index: its PQ share, and its (image id, PNG, segments_info) per kind.
        self._counts: dict[int, ImageCounts] = {}
        self._files: dict[int, dict[str, tuple]] = {}
        self._predictions: dict[int, tuple] = {}

    def _keep(self, shares) -> None:
        for index, counts, files in shares:
            self._counts[index] = counts
            self._files[index] = files

    def add(self, outputs, batch: Mapping[str, np.ndarray]) -> None:
        host = sharding.to_host_rows(outputs)
        size = host["semantic"].shape[1]
        canvas = geometry.Placement(size, size, size, size)
        for row in np.flatnonzero(host["index"] >= 0):
            index = int(host["index"][row])
            image = {name: values[row] for name, values in host.items() if name != "index"}
            self._keep(self._work.submit(
                image, self._frame.placements[index], self._frame.ground_truth(index),
                self._frame.image_ids[index], index,
            ))
            if len(self._predictions) < self._num_kept:
                self._predictions[index] = self._fusion.fused(image, canvas)

    def result(self):
        """Process 0 gathers every process's shares and adds them in the split's order (the
        sums of one process, to the bit); all get the metrics."""
        self._keep(self._work.drain())
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
