"""Pictures of a trained model's predictions, semantic or instance.

`python -m jaxseg.predict --workdir=DIR --input=IMAGE_OR_FOLDER --output=OUT`
restores the newest checkpoint in DIR (with DIR/config.json) and writes
`OUT/<name>_overlay.png` for every image: a colour overlay of the predicted label
map (U-Net), or coloured instance masks with boxes, class names and scores (Mask R-CNN).
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from PIL import Image

from jaxseg import checkpointing
from jaxseg import sharding
from jaxseg import train
from jaxseg import visualize
from jaxseg import visualize_instances
from jaxseg.config_files import load_workdir_config
from jaxseg.models.mask_rcnn import MaskRCNN

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Detections drawn on instance pictures need at least this score.
DRAWN_SCORE_THRESHOLD = 0.5


def load_trained_state(workdir: str) -> tuple[ml_collections.ConfigDict, train.TrainState]:
    """The config and the newest checkpointed train state of `workdir`."""
    config = load_workdir_config(workdir)
    mesh = sharding.create_mesh(jax.devices()[:1])
    template = train.initial_state(config, mesh, train.create_learning_rate_schedule(config))
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps,
    )
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(f"No checkpoint under {workdir}/checkpoints.")
    state, _ = checkpointer.restore(template)
    checkpointer.close()
    return config, state


def predict_label_map(state: train.TrainState, image: np.ndarray, image_size: int) -> np.ndarray:
    """Per-pixel class ids `[H, W]` int32 of an RGB uint8 image `[H, W, 3]` of any size.

    The image is resized (bilinear) to the model's `image_size` square and the
    prediction resized back (nearest) to the image's own size.
    """
    height, width = image.shape[:2]
    logits = _apply_eval(state, _model_input(image, image_size))
    label_map = np.asarray(jnp.argmax(logits[0], axis=-1), np.uint8)
    return np.asarray(Image.fromarray(label_map).resize((width, height), Image.NEAREST), np.int32)


def predict_instances(
    state: train.TrainState, image: np.ndarray, image_size: int, mask_threshold: float
) -> dict[str, np.ndarray]:
    """Mask R-CNN detections of an RGB uint8 image `[H, W, 3]` of any size, in its pixels.

    The image is resized (bilinear) to the model's `image_size` square; boxes are
    scaled back and mask probabilities resized back (bilinear) before binarizing at
    `mask_threshold`.

    Returns:
      `boxes [D, 4]` float32 (x1, y1, x2, y2), `scores [D]` float32, `classes [D]`
      int32, `masks [D, H, W]` bool (all False for invalid slots), `valid [D]` bool.
    """
    height, width = image.shape[:2]
    detections = jax.tree.map(
        lambda x: np.asarray(x[0]), _detect(state, _model_input(image, image_size))
    )
    scale = np.array([width, height, width, height], np.float32) / image_size
    masks = np.zeros((len(detections["valid"]), height, width), bool)
    for slot in np.flatnonzero(detections["valid"]):
        probabilities = Image.fromarray(detections["masks"][slot].astype(np.float32))
        resized = np.asarray(probabilities.resize((width, height), Image.BILINEAR))
        masks[slot] = resized >= mask_threshold
    return {**detections, "boxes": detections["boxes"] * scale, "masks": masks}


def _model_input(image: np.ndarray, image_size: int) -> jax.Array:
    """`[1, S, S, 3]` float32 in [0, 1] from an RGB uint8 image `[H, W, 3]`."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}.")
    resized = Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR)
    return jnp.asarray(np.asarray(resized, np.float32)[None] / 255.0)


@jax.jit
def _apply_eval(state: train.TrainState, images: jax.Array) -> jax.Array:
    return state.apply_fn(train.eval_variables(state), images, train=False)


@jax.jit
def _detect(state: train.TrainState, images: jax.Array) -> dict:
    return state.apply_fn(train.eval_variables(state), images, method=MaskRCNN.detect)


def prediction_picture(
    config: ml_collections.ConfigDict, state: train.TrainState, image: np.ndarray
) -> np.ndarray:
    """The picture, uint8 RGB, of the model's prediction on an RGB uint8 image `[H, W, 3]`.

    Mask R-CNN: `[H, W, 3]`, the detections drawn on the image. U-Net: the image beside
    its predicted label map in opaque class colours (`visualize.tile_grid`), above a legend
    of the classes predicted (`visualize.add_legend`): `[24 + H + 20·rows, 2·W + 12, 3]`,
    wider when a legend entry is.
    """
    class_names = list(config.data.class_names)
    if config.model.name == "mask_rcnn":
        mask_threshold = config.model.get("mask_threshold", MaskRCNN.mask_threshold)
        found = predict_instances(state, image, config.data.image_size, mask_threshold)
        return visualize_instances.draw_instances(
            image,
            found["boxes"],
            found["scores"],
            found["classes"],
            found["masks"],
            found["valid"],
            class_names,
            score_threshold=DRAWN_SCORE_THRESHOLD,
        )
    label_map = predict_label_map(state, image, config.data.image_size)
    palette = visualize.class_palette(len(class_names))
    panels = visualize.tile_grid(
        [[image, visualize.colour_label_map(label_map, palette)]], ("image", "prediction")
    )
    return visualize.add_legend(panels, visualize.legend_entries([label_map], palette, class_names))


def list_images(path: str) -> list[str]:
    """`path` itself if it is a file, else the image files directly inside it, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input {path} is neither an image file nor a folder.")
    files = sorted(
        os.path.join(path, name)
        for name in os.listdir(path)
        if name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {path}.")
    return files


def write_overlays(workdir: str, input_path: str, output_dir: str) -> list[str]:
    """Writes one prediction picture (`prediction_picture`) per input image; returns their paths."""
    config, state = load_trained_state(workdir)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in list_images(input_path):
        image = np.asarray(Image.open(path).convert("RGB"))
        stem = os.path.splitext(os.path.basename(path))[0]
        out_path = os.path.join(output_dir, f"{stem}_overlay.png")
        Image.fromarray(prediction_picture(config, state, image)).save(out_path)
        written.append(out_path)
    return written


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training work directory (config.json + checkpoints).")
flags.DEFINE_string("input", None, "An image file or a folder of images.")
flags.DEFINE_string("output", None, "Folder for the prediction PNGs.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    written = write_overlays(FLAGS.workdir, FLAGS.input, FLAGS.output)
    print(f"Wrote {len(written)} prediction pictures to {FLAGS.output}.")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "input", "output"])
    app.run(main)
