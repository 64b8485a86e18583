"""Architecture ablation: the U-Net with and without its skip connections.

Without skips the decoder sees only the upsampled bottleneck (1/8 resolution), so object
outlines should suffer most; the boundary metric is Boundary IoU (Cheng et al. 2021)
with a 2-pixel band (`jaxseg.metrics.boundary_counts`), next to mIoU. Data, model and
optimizer: `configs/unet_shapes.py`, trained 1,000 steps of batch 8 instead of 2,000.

Run: python -m jaxseg.sweep experiments/skip_connections.py --workdir=runs/skip_connections
"""

from jaxseg.sweep import Sweep


def get_sweep() -> Sweep:
    """U-Net with and without skip connections, 3 seeds each."""
    return Sweep(
        config="configs/unet_shapes.py",
        overrides={"num_train_steps": 1000},
        variants={
            "skips": {"model.skip_connections": True},
            "no_skips": {"model.skip_connections": False},
        },
        seeds=(0, 1, 2),
        metrics=("miou", "boundary_iou", "pixel_accuracy"),
        chart_metrics=("miou", "boundary_iou"),
        budget=(
            "about 30 min on 2 CPU cores: 6 runs of about 5 min (1,000 steps of batch 8 at "
            "about 35 images/s, plus compilation and evaluation); the three sweeps of "
            "experiments/ together are sized for under 3 hours"
        ),
    )
