"""What limits DeepLabv3+ on the shapes data: short runs of configs/deeplab_shapes.py.

`configs/deeplab_shapes.py` at its first setting (ResNet-18 width 32, output stride 16,
learning rate 3e-3, dropout 0.1) ended 2,000 steps at validation mIoU 0.862 with a train
loss (CE + Dice) of 0.107, against the U-Net's 0.945 and 0.039: it underfits. A perfect
stride-4 map of class probabilities, upsampled bilinearly as the decoder's logits are,
scores mIoU 0.957 on the same split, a stride-8 one 0.861, so the stride-4 decoder is not
what holds it back. Each variant here changes one thing and trains 500 steps (cosine to 0
at 500), one seed: a probe for the direction, not a claim.

Run: python -m jaxseg.sweep experiments/deeplab_shapes_probe.py --workdir=runs/deeplab_probe
"""

from jaxseg.sweep import Sweep


def get_sweep() -> Sweep:
    """One-change variants of the shapes DeepLabv3+, 500 steps each."""
    return Sweep(
        config="configs/deeplab_shapes.py",
        overrides={"num_train_steps": 500, "eval_every_steps": 500, "checkpoint_every_steps": 500},
        variants={
            "baseline": {},
            "lr_1e-3": {"learning_rate": 1e-3},
            "lr_1e-2": {"learning_rate": 1e-2},
            "width_64": {"model.backbone_width": 64},
            "os_8": {"model.output_stride": 8},
            "no_dropout": {"model.dropout_rate": 0.0},
        },
        seeds=(0,),
        metrics=("miou", "boundary_iou", "train_loss", "train_seconds"),
        chart_metrics=("miou",),
        budget="about 40 min on 2 CPU cores: 6 runs of 500 steps of batch 8",
    )
