"""Mask R-CNN ablation: RoI Align vs RoI Pool as the box and mask heads' feature extractor.

RoI Pool quantizes each RoI and its bins to the feature grid; RoI Align samples
bilinearly at exact positions, which matters most for mask quality at strict IoU
(mask AP75). Config: `configs/mask_rcnn_shapes.py` trained 1,200 steps of batch 4
instead of 4,000 (so APs are below the full run's box AP 0.795 / mask AP 0.851),
evaluated once at the end. Reported: COCO mask AP, AP50, AP75 and box AP on the
validation split.

Run: python -m jaxseg.sweep experiments/roi_extractor.py --workdir=runs/roi_extractor
"""

from jaxseg.sweep import Sweep


def get_sweep() -> Sweep:
    """Mask R-CNN with RoI Align and with RoI Pool, 3 seeds each."""
    return Sweep(
        config="configs/mask_rcnn_shapes.py",
        overrides={"num_train_steps": 1200, "eval_every_steps": 1200},
        variants={
            "roi_align": {"model.roi_extractor": "roi_align"},
            "roi_pool": {"model.roi_extractor": "roi_pool"},
        },
        seeds=(0, 1, 2),
        metrics=("mask_ap", "mask_ap50", "mask_ap75", "box_ap"),
        budget=(
            "about 45 min on 2 CPU cores: 6 runs of about 7.5 min (1,200 steps of batch 4 at "
            "about 0.3 s/step, plus compilation and COCO evaluation); the three sweeps of "
            "experiments/ together are sized for under 3 hours"
        ),
    )
