"""What a decoder predicting at stride s can score at best on the shapes validation split.

For s = 2, 4, 8: the one-hot ground truth averaged over s x s cells (a perfect stride-s map
of class probabilities), upsampled bilinearly to the full size as a decoder's logits are
(`jax.image.resize`, half-pixel centres), and its argmax scored against the ground truth
itself (mIoU and per-class IoU, from `jaxseg.metrics`). The same with log-probabilities.
It tells whether a model's resolution or its training limits it: DeepLabv3+'s decoder
predicts at stride 4.

Run: python benchmarks/decoder_stride_bound.py
Prints one table.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from configs.base import data as base_data
from jaxseg import metrics
from jaxseg.data import shapes

CLASS_NAMES = ("background", "circle", "rectangle", "triangle")


def validation_labels() -> np.ndarray:
    """int32 [N, S, S] semantic maps of the validation split of the experiments' shapes data
    (`configs/base/data.py`: 200 images, 128 x 128)."""
    data = base_data.shapes()
    config = shapes.shapes_config(
        image_size=data.image_size,
        num_train=data.num_train,
        num_validation=data.num_validation,
        num_test=data.num_test,
    )
    examples = range(data.num_validation)
    return np.stack([shapes.generate_example(config, "validation", i)["semantic"] for i in examples])


def stride_bound(labels: np.ndarray, stride: int, log: bool) -> dict:
    """mIoU and per-class IoU of the upsampled stride-`stride` ground-truth average."""
    count, size = labels.shape[:2]
    onehot = jax.nn.one_hot(labels, len(CLASS_NAMES))
    cells = size // stride
    averaged = onehot.reshape(count, cells, stride, cells, stride, -1).mean(axis=(2, 4))
    values = jnp.log(averaged + 1e-3) if log else averaged
    upsampled = jax.image.resize(values, (count, size, size, len(CLASS_NAMES)), "bilinear")
    predictions = jnp.argmax(upsampled, axis=-1)
    confusion = metrics.confusion_matrix(predictions, labels, len(CLASS_NAMES))
    return metrics.segmentation_metrics(np.asarray(confusion))


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    labels = validation_labels()
    header = f"{'stride':>6} {'map':>9} {'mIoU':>7} " + " ".join(f"{n:>10}" for n in CLASS_NAMES)
    print(header)
    for stride in (2, 4, 8):
        for log in (False, True):
            result = stride_bound(labels, stride, log)
            per_class = " ".join(f"{v:>10.4f}" for v in result["per_class_iou"])
            kind = "log-prob" if log else "prob"
            print(f"{stride:>6} {kind:>9} {result['miou']:>7.4f} {per_class}")


if __name__ == "__main__":
    main()
