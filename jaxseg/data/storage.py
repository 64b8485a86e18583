"""Storing generated or converted examples with TFDS, without TensorFlow.

Images and label maps are stored as PNG bytes (TFDS's `Image` feature needs TensorFlow
to encode numpy arrays), in the `array_record` format that `builder.as_data_source()`
reads by random access.
"""

import io
import time

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray, compress_level: int) -> bytes:
    """PNG encoding of a uint8 `[H, W]` or `[H, W, 3]` array (zlib level 0..9)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def prepare(
    builder_class,
    config,
    data_dir: str | None = None,
    *,
    build: bool = True,
    wait_timeout_s: float = 3600.0,
    poll_interval_s: float = 1.0,
):
    """A `builder_class` builder for `config` whose data exists under `data_dir`.

    With several processes sharing `data_dir`, pass `build=(process_index == 0)`: process 0
    builds the data if missing; the others wait until TFDS has moved the finished dataset
    into place (it writes to a temporary directory and renames it), then open it.

    Args:
      builder_class: a `tfds.core.GeneratorBasedBuilder` subclass.
      config: its builder config.
      data_dir: TFDS data directory; None = TFDS default.
      build: build the data if missing; if False, wait for another process to do so.
      wait_timeout_s: how long a non-building process waits before a TimeoutError.
      poll_interval_s: seconds between checks while waiting.
    """
    builder = builder_class(config=config, data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    if build:
        builder.download_and_prepare()
        return builder
    deadline = time.monotonic() + wait_timeout_s
    while not builder.is_prepared():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"dataset {builder.name}/{config.name} did not appear under {builder.data_dir} "
                f"within {wait_timeout_s} s; is process 0 building it?"
            )
        time.sleep(poll_interval_s)
    return builder_class(config=config, data_dir=data_dir, file_format="array_record")
