"""Pretrained backbone vs from scratch: Mask R-CNN on the shapes, at two step budgets.

The pretrained variants start the ResNet-18 (width 32, GroupNorm) of
`configs/mask_rcnn_shapes.py` from the backbone of a Panoptic FPN the project trained on
another dataset, the panoptic shapes (`configs/panoptic_shapes.py` cut to 1,500 steps: the same
object classes drawn over textured stuff instead of plain backgrounds, other images); the
heads start fresh in both. Each budget is a full schedule (warmup, cosine decay to 0 at its
last step), evaluated once at the end; the table answers how many steps each start needs
for a given mask AP. No ImageNet file is involved (there is no network here); the
ImageNet path is the same `config.model.pretrained` field with a torchvision file.

Prepare the backbone (or export the one of an existing panoptic_shapes run), then sweep:
  python -m jaxseg.main --config=configs/panoptic_shapes.py --workdir=runs/panoptic_shapes
    (with --config.num_train_steps=1500 --config.eval_every_steps=1500)
  python -m jaxseg.export_backbone --workdir=runs/panoptic_shapes --output=runs/panoptic_shapes_backbone.safetensors
  python -m jaxseg.sweep experiments/finetune_backbone.py --workdir=runs/finetune_backbone
"""

from jaxseg.sweep import Sweep, product

BACKBONE = "runs/panoptic_shapes_backbone.safetensors"
BUDGETS = (200, 400)


def get_sweep() -> Sweep:
    """From scratch and from the panoptic shapes' backbone, 200 and 400 steps, 2 seeds."""
    budgets = {
        f"{steps}_steps": {
            "num_train_steps": steps,
            "eval_every_steps": steps,
            "checkpoint_every_steps": steps,
            "optimizer.warmup_steps": steps // 10,
        }
        for steps in BUDGETS
    }
    starts = {"scratch": {}, "pretrained": {"model.pretrained": BACKBONE}}
    return Sweep(
        config="configs/mask_rcnn_shapes.py",
        variants=product(budgets, starts),
        seeds=(0, 1),
        metrics=("mask_ap", "mask_ap50", "box_ap"),
        budget=(
            "about 60 min on 2 CPU cores (AMD EPYC, AVX2) after the backbone exists: 8 runs, "
            "2,400 steps of batch 4 at about 1.1 s/step plus compilation and one COCO "
            "evaluation each"
        ),
    )
