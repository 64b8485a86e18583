"""`python -m jaxseg.export_backbone --workdir=DIR --output=BACKBONE.safetensors [--step=N]`

Writes the ResNet backbone of a training run's checkpoint (the newest, or step N) as a Flax
`.safetensors` file that `config.model.pretrained` loads into another model with the same
ResNet (name, `backbone_width`, norm): pretraining on one dataset, fine-tuning on another.
The trained params are written (not the EMA ones), with the BatchNorm statistics if the
norm keeps any. A --workdir that is not a training run, a model without a ResNet backbone
and an unwritable --output each stop with one line.
"""

import argparse
import os
import sys
from typing import Any, Optional

import jax
import numpy as np
import safetensors

from jaxseg import registry
from jaxseg import trained_run
from jaxseg.models import pretrained
from jaxseg.models.pretrained import SAFETENSORS_SUFFIX

def backbone_of(config: Any, variables: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(a description like "resnet18 (width 32)", {collection: backbone tree} as float32
    numpy arrays) of a model's `variables` ({"params": ..., "batch_stats": ...}), by its
    registered `pretrained_config.Backbone`.

    Raises:
      trained_run.RunError: the model has no pretrainable ResNet backbone.
    """
    entry = registry.MODELS.get(config.model.name)
    backbone = getattr(entry.schema, "pretrained_backbone", None)
    if backbone is None:
        raise trained_run.RunError(
            f"--workdir: the {config.model.name} model has no ResNet backbone to export."
        )
    trees = {
        collection: jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), tree[backbone.submodule])
        for collection, tree in variables.items()
        if backbone.submodule in tree
    }
    name = f"{config.model[backbone.name_field]} (width {config.model[backbone.width_field]})"
    return name, trees


def export_backbone(workdir: str, output: str, step: Optional[int] = None) -> str:
    """Writes the backbone of `workdir`'s checkpoint at `step` to `output`; returns a
    one-line summary.

    Raises:
      trained_run.RunError: not a training run, no such checkpoint, no backbone, or an
        `output` that is not a writable .safetensors path.
    """
    folder = os.path.dirname(os.path.abspath(output))
    if not output.endswith(SAFETENSORS_SUFFIX) or not os.path.isdir(folder):
        raise trained_run.RunError(
            f"--output={output} must be a {SAFETENSORS_SUFFIX} file in an existing folder."
        )
    config, state = trained_run.load_trained_state(workdir, step)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    description, trees = backbone_of(config, variables)
    try:
        pretrained.save_variables(trees, output)
    except (OSError, safetensors.SafetensorError) as error:
        raise trained_run.RunError(f"--output={output} cannot be written ({error}).") from None
    return f"Wrote the {description} backbone of step {int(state.step)} to {output}."


def main(argv: Optional[list[str]] = None) -> None:
    """The command line (see the module docstring); a bad input exits with one line."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.export_backbone",
        description="Writes a training run's ResNet backbone as a Flax .safetensors file.",
    )
    parser.add_argument("--workdir", required=True, help="the training run")
    parser.add_argument("--output", required=True, help="the .safetensors file to write")
    parser.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
    args = parser.parse_args(argv)
    try:
        print(export_backbone(args.workdir, args.output, args.step))
    except trained_run.RunError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
