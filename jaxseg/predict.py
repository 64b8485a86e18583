"""Pictures of a trained model's predictions, semantic or instance.

`python -m jaxseg.predict --workdir=DIR --input=IMAGE_OR_FOLDER --output=OUT`
restores the newest checkpoint in DIR (with DIR/config.json) and writes
`OUT/<name>_overlay.png` for every image, drawn by the run's task: the image beside its
predicted label map with a legend (semantic), or coloured instance masks with boxes, class
names and scores (instance).

Each image is read as the folder datasets read it (`jaxseg.data.images.read_rgb`) and
prepared as the data pipeline prepares it (`jaxseg.data.geometry.fit_image`: resized with
its aspect ratio kept as the config's test-time fit says, padded to the config's square); the prediction's valid region is
resized back to the image's own pixels. Every input is checked before the checkpoint is
restored; a missing or unreadable input and a --workdir that is not a training run (no
config.json, no checkpoint) stop with one line naming the path.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from PIL import Image

from jaxseg import tasks
from jaxseg import trained_run
from jaxseg.data.images import IMAGE_EXTENSIONS, ImageReadError, read_rgb
from jaxseg.training.state import eval_variables


class PredictError(Exception):
    """An --input naming no usable image; the message is one line naming it."""


def list_images(path: str) -> list[str]:
    """`path` itself if it is a file, else the image files directly inside it, sorted.

    Raises:
      PredictError: `path` does not exist, or is a folder without image files.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise PredictError(f"--input: {path} is neither an image file nor a folder")
    files = sorted(
        os.path.join(path, name)
        for name in os.listdir(path)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
    )
    if not files:
        raise PredictError(f"--input: no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return files


def write_overlays(workdir: str, input_path: str, output_dir: str) -> list[str]:
    """Writes one prediction picture (the run's `Task.prediction_picture`) per input image;
    returns their paths. The task, and so its jitted model call, is built once for all images.

    Every input image is read once before the checkpoint is restored, so a bad one stops
    the run before the slow part.

    Raises:
      PredictError: no input images.
      RunError: `workdir` is not a training run.
      ImageReadError: an input file that is not a readable image.
    """
    paths = list_images(input_path)
    for path in paths:
        read_rgb(path)
    config, state = trained_run.load_trained_state(workdir)
    task, variables = tasks.task_for(config), eval_variables(state)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in paths:
        image = read_rgb(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        out_path = os.path.join(output_dir, f"{stem}_overlay.png")
        Image.fromarray(task.prediction_picture(variables, image)).save(out_path)
        written.append(out_path)
    return written


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training work directory (config.json + checkpoints).")
flags.DEFINE_string("input", None, "An image file or a folder of images.")
flags.DEFINE_string("output", None, "Folder for the prediction PNGs.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        written = write_overlays(FLAGS.workdir, FLAGS.input, FLAGS.output)
    except (PredictError, trained_run.RunError, ImageReadError) as error:
        sys.exit(str(error))
    print(f"Wrote {len(written)} prediction pictures to {FLAGS.output}.")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "input", "output"])
    app.run(main)
