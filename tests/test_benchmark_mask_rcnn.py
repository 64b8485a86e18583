"""benchmarks/mask_rcnn.py: one tiny run through its command line prints one JSON object."""

import json
import math
import os

from benchmarks import mask_rcnn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_OVERRIDES = {
    "data.image_size": 64,
    "model.backbone_width": 8,
    "model.fpn_channels": 16,
    "model.rpn_pre_nms_topk_train": 64,
    "model.rpn_post_nms_topk_train": 32,
    "model.rpn_pre_nms_topk_test": 64,
    "model.rpn_post_nms_topk_test": 32,
    "model.roi_batch_size_per_image": 32,
    "model.mask_rois_per_image": 8,
    "model.box_head_dim": 32,
    "model.mask_head_channels": 8,
    "model.detections_per_image": 10,
}


def test_json_has_positive_finite_times(capsys):
    argv = [
        "mask_rcnn.py",
        f"--config={os.path.join(REPO, 'configs', 'mask_rcnn_shapes.py')}",
        *(f"--config.{field}={value}" for field, value in TINY_OVERRIDES.items()),
        "--batch_size=2",
        "--num_devices=1",
        "--steps=2",
        "--warmup=1",
        "--json",
    ]
    mask_rcnn.main(argv)
    results = json.loads(capsys.readouterr().out)
    assert results["config"].endswith("mask_rcnn_shapes.py")
    assert (results["batch_size"], results["image_size"]) == (2, 64)
    assert results["device_kind"]
    times = [
        results[name]
        for name in ("train_step_ms", "inference_ms_per_image", "train_compile_s",
                     "inference_compile_s")
    ]
    times += [value for timing in results["timings"].values() for value in timing.values()]
    assert all(math.isfinite(value) and value > 0 for value in times), results
