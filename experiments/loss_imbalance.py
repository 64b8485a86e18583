"""Loss ablation under class imbalance: CE vs Dice vs CE+Dice vs focal for a U-Net.

Data: the shapes builder's predefined small-rare-foreground config
(`jaxseg.data.shapes.SMALL_RARE_FOREGROUND`: one or two shapes per image, 5-12% of the
image side), where foreground is about 0.5% of the pixels (mean over the validation
split). Model and optimizer: `configs/unet_shapes.py`, trained 1,000 steps of batch 8
instead of 2,000. Reported: foreground IoU and Dice (means over circle, rectangle and
triangle) and mIoU on the validation split.

Run: python -m jaxseg.sweep experiments/loss_imbalance.py --workdir=runs/loss_imbalance
"""

from jaxseg.data.shapes import SMALL_RARE_FOREGROUND
from jaxseg.sweep import Sweep


def get_sweep() -> Sweep:
    """4 losses x 3 seeds of the U-Net on small, rare foreground shapes."""
    return Sweep(
        config="configs/unet_shapes.py",
        overrides={
            "num_train_steps": 1000,
            **{f"data.{field}": value for field, value in SMALL_RARE_FOREGROUND.items()},
        },
        variants={name: {"loss.name": name} for name in ("ce", "dice", "ce+dice", "focal")},
        seeds=(0, 1, 2),
        metrics=("foreground_iou", "foreground_dice", "miou"),
        chart_metrics=("foreground_iou", "foreground_dice"),
        budget=(
            "about 60 min on 2 CPU cores: 12 runs of about 5 min (1,000 steps of batch 8 at "
            "about 35 images/s, plus compilation and evaluation); the three sweeps of "
            "experiments/ together are sized for under 3 hours"
        ),
    )
