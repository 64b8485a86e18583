"""Evaluation of instance predictions: COCO box and mask AP through pycocotools."""
from jaxseg.evaluation.coco import (
    COCOEvaluator,
    detections_to_coco,
    encode_masks,
    ground_truth_to_coco,
    load_coco_json,
    write_coco_json,
)

__all__ = [
    "COCOEvaluator",
    "detections_to_coco",
    "encode_masks",
    "ground_truth_to_coco",
    "load_coco_json",
    "write_coco_json",
]
