"""The interface between the training loop and a segmentation task."""

import abc
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from PIL import Image

from jaxseg.data import batching, geometry
from jaxseg.models.factory import create_model

Variables = Mapping[str, Any]


def model_input(image: np.ndarray, fit: geometry.Fit) -> tuple[jax.Array, geometry.Placement]:
    """`[1, S, S, 3]` float32 in [0, 1] of an RGB uint8 image `[H, W, 3]`, exactly as the
    data pipeline and the steps feed the model a folder dataset's image fitted by `fit` (its
    uint8 canvas, `batching.model_images`; the test-time fit, `geometry.fit_of(config.data)`),
    and the image's placement."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}.")
    canvas, placement = geometry.fit_image(image, fit)
    return jax.numpy.asarray(batching.unit_range(canvas[None])), placement


class Evaluation(abc.ABC):
    """Accumulates one pass over a validation split, batch by batch."""

    @abc.abstractmethod
    def add(self, outputs: Any, batch: Mapping[str, np.ndarray]) -> None:
        """Takes the jitted eval step's `outputs` for this process's host `batch`."""

    @abc.abstractmethod
    def result(self) -> tuple[dict[str, float], dict[int, Any]]:
        """The split's metrics, and predictions of up to `config.num_prediction_images`
        examples keyed by their index in the split (for pictures)."""

    @abc.abstractmethod
    def write_results(self, directory: str) -> None:
        """Writes the pass's raw results into the existing `directory` (instance:
        `coco_results.json`, `image_ids.json`; semantic: `confusion.csv`)."""


class Task(abc.ABC):
    """Model, loss, eval outputs, metrics and pictures of one kind of segmentation.

    Attributes:
      config: the experiment config.
      model: the Flax module of `config.model`.
      train_fields: batch fields the train step reads (`jaxseg.data.batching.FIELDS`); the
        input workers make only these.
      eval_fields: batch fields the eval step reads.
      host_fields: batch fields its `Evaluation.add` reads besides `eval_fields`.
      curves: metric names drawn in `training_curves.png`.
    """

    train_fields: tuple[str, ...] = ()
    eval_fields: tuple[str, ...] = ()
    host_fields: tuple[str, ...] = ("valid", "index")
    curves: tuple[str, ...] = ()

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.model = create_model(config)

    @abc.abstractmethod
    def prediction_picture(self, variables: Variables, image: np.ndarray) -> np.ndarray:
        """The picture, uint8 RGB, of the prediction on an RGB uint8 image `[H, W, 3]` of any
        size, prepared as the data pipeline prepares a folder dataset's image (`model_input`)
        and mapped back to the image's own pixels."""

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError for a bad field the task reads beyond the model's own section
        (run by `validate_config` before anything is built; default: none)."""

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
