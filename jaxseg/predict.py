"""Colour overlays of a trained model's predictions.

`python -m jaxseg.predict --workdir=DIR --input=IMAGE_OR_FOLDER --output=OUT`
restores the newest checkpoint in DIR (with DIR/config.json) and writes
`OUT/<name>_overlay.png` for every image.
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
from jaxseg.config_files import load_workdir_config

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    resized = Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR)
    batch = jnp.asarray(np.asarray(resized, np.float32)[None] / 255.0)
    logits = _apply_eval(state, batch)
    label_map = np.asarray(jnp.argmax(logits[0], axis=-1), np.uint8)
    return np.asarray(Image.fromarray(label_map).resize((width, height), Image.NEAREST), np.int32)


@jax.jit
def _apply_eval(state: train.TrainState, images: jax.Array) -> jax.Array:
    return state.apply_fn(
        {"params": train.eval_params(state), "batch_stats": state.batch_stats}, images, train=False
    )


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
    """Writes one overlay PNG per input image; returns their paths."""
    config, state = load_trained_state(workdir)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in list_images(input_path):
        image = np.asarray(Image.open(path).convert("RGB"))
        label_map = predict_label_map(state, image, config.data.image_size)
        stem = os.path.splitext(os.path.basename(path))[0]
        out_path = os.path.join(output_dir, f"{stem}_overlay.png")
        visualize.save_overlay_png(
            out_path, image, label_map, palette=visualize.class_palette(config.data.num_classes)
        )
        written.append(out_path)
    return written


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training work directory (config.json + checkpoints).")
flags.DEFINE_string("input", None, "An image file or a folder of images.")
flags.DEFINE_string("output", None, "Folder for the overlay PNGs.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    written = write_overlays(FLAGS.workdir, FLAGS.input, FLAGS.output)
    print(f"Wrote {len(written)} overlays to {FLAGS.output}.")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "input", "output"])
    app.run(main)
