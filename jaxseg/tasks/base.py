"""The interface between the training loop and a segmentation task."""

import abc
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from PIL import Image

from jaxseg.models.factory import create_model

Variables = Mapping[str, Any]


class Evaluation(abc.ABC):
    """Accumulates one pass over a validation split, batch by batch."""

    @abc.abstractmethod
    def add(self, outputs: Any, batch: Mapping[str, np.ndarray]) -> None:
        """Takes the jitted eval step's `outputs` for this process's host `batch`."""

    @abc.abstractmethod
    def result(self) -> tuple[dict[str, float], dict[int, Any]]:
        """The split's metrics, and predictions of up to `config.num_prediction_images`
        examples keyed by their index in the split (for pictures)."""


class Task(abc.ABC):
    """Model, loss, eval outputs, metrics and pictures of one kind of segmentation.

    Attributes:
      config: the experiment config.
      model: the Flax module of `config.model`.
      train_fields: batch fields the train step reads (`jaxseg.data.pipeline` names).
      eval_fields: batch fields the eval step reads.
      curves: metric names drawn in `training_curves.png`.
    """

    train_fields: tuple[str, ...] = ()
    eval_fields: tuple[str, ...] = ()
    curves: tuple[str, ...] = ()

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.model = create_model(config)

    @abc.abstractmethod
    def init_variables(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> Variables:
        """All model variables (`params`, maybe `batch_stats`) for `[H, W, C]` images."""

    @abc.abstractmethod
    def loss(
        self, variables: Variables, batch: Mapping[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array], Any]:
        """Training loss (float32 scalar), its named components and the new `batch_stats`.

        `variables` holds `params` and `batch_stats`; `rng` drives dropout or sampling.
        """

    @abc.abstractmethod
    def eval_outputs(self, variables: Variables, batch: Mapping[str, jax.Array]) -> Any:
        """What the jitted eval step returns for a batch of `eval_fields`."""

    @abc.abstractmethod
    def eval_out_shardings(self, mesh: jax.sharding.Mesh) -> Any:
        """Shardings of `eval_outputs` (a matching pytree)."""

    @abc.abstractmethod
    def new_evaluation(self, source) -> Evaluation:
        """An empty accumulator for one pass over the split `source`."""

    @abc.abstractmethod
    def summary(self, metrics: Mapping[str, float]) -> str:
        """One line of the headline validation metrics."""

    def write_pictures(self, workdir: str, source, predictions: Mapping[int, Any]) -> None:
        """`workdir/predictions.png` of the kept `predictions` of `source`'s examples (keyed
        by index), and their raw images in `workdir/samples` (see `save_samples`)."""
        if not predictions:
            return
        save_samples(workdir, source, predictions)
        examples = [source[index] for index in predictions]
        self.draw_predictions(
            os.path.join(workdir, "predictions.png"), examples, list(predictions.values())
        )

    @abc.abstractmethod
    def draw_predictions(self, path: str, examples: list[dict], predictions: list[Any]) -> None:
        """Saves a picture of `examples` (host dicts with `image` [H, W, 3] uint8 and the
        ground truth) beside their `predictions` at `path`."""


def save_samples(workdir: str, source, indices) -> None:
    """Saves the raw images of `source[indices]` as `workdir/samples/validation_NNN.png`.

    They are there to try `python -m jaxseg.predict` on.
    """
    directory = os.path.join(workdir, "samples")
    os.makedirs(directory, exist_ok=True)
    for index in indices:
        image = source[index]["image"]
        Image.fromarray(image).save(os.path.join(directory, f"validation_{index:03d}.png"))
