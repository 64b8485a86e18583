"""Panoptic FPN ablation: the semantic loss's weight in the total loss, 0.25 / 0.5 / 1.0.

The paper (Kirillov et al., 2019, Table 3) finds the instance and semantic branches trade
off through this weight: more weight helps stuff (PQ stuff) and can cost things (PQ
things). Data, model and optimizer: `configs/panoptic_shapes.py` (detectron2's default
weight 0.5 is its middle variant), trained 1,000 steps of batch 4 instead of 4,000, with
its evaluation at the end only.

Run: python -m jaxseg.sweep experiments/panoptic_loss_weight.py --workdir=runs/panoptic_loss_weight
"""

from jaxseg.sweep import Sweep


def get_sweep() -> Sweep:
    """Semantic loss weight 0.25, 0.5 and 1.0, 3 seeds each."""
    return Sweep(
        config="configs/panoptic_shapes.py",
        overrides={"num_train_steps": 1000, "eval_every_steps": 1000, "optimizer.warmup_steps": 100},
        variants={
            "weight_0.25": {"model.semantic_loss_weight": 0.25},
            "weight_0.5": {"model.semantic_loss_weight": 0.5},
            "weight_1.0": {"model.semantic_loss_weight": 1.0},
        },
        seeds=(0, 1, 2),
        metrics=("pq", "pq_things", "pq_stuff", "sq", "rq"),
        chart_metrics=("pq", "pq_things", "pq_stuff"),
        budget=(
            "about 2 h on 2 quiet CPU cores: 9 runs of about 13 min (1,000 steps of batch 4 "
            "at about 1.1 steps/s, plus compilation and one evaluation of 200 images)"
        ),
    )
