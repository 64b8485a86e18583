"""The one image reader of the project: any supported image file -> RGB uint8 pixels.

The folder datasets (`coco_folder`, `semantic_folder`) and `jaxseg.predict` read images
with `read_rgb`, so a file gives the same pixels for training and for prediction.

How each PIL mode becomes RGB uint8 (the first frame of a multi-frame GIF or TIFF):
  1                   0 / 255 grey.
  L, LA               the grey value in R, G and B.
  P, PA               the palette colours.
  RGB, RGBA, RGBX     the colour channels.
  CMYK                PIL's conversion: R = round((255 - C) · (255 - K) / 255), G, B alike.
  YCbCr               PIL's conversion (JPEG's YCbCr -> RGB).
  I;16, I;16L, I;16B, I;16N (16-bit grey)
                      v -> round(v / 257): the full range 0..65535 onto 0..255, so
                      nothing saturates or clips.
  I (32-bit signed integers, as PIL opens many 16-bit and integer TIFFs)
                      the 16-bit rule; every value must lie in 0..65535.
  F (32-bit floats)   v -> round(255 · v); every value must lie in [0, 1].
Alpha is dropped, not composited: RGBA, LA, PA and palette transparency keep the colours
stored under transparent pixels. Other modes (LAB, HSV, ...) are refused.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
from PIL import Image

# The file extensions the project treats as images (folder datasets, predict's --input).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_CONVERTED_TO_RGB = ("1", "L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
_PALETTE = ("P", "PA")
_GREY_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_MAX_16 = 65535
# What PIL raises on files it cannot decode (truncated, corrupt, not an image, too large).
_DECODING_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)


class ImageReadError(ValueError):
    """An image file that cannot be read; the message is one line naming the file."""


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_image(path, data: bytes | None = None) -> Image.Image:
    """The decoded first frame of the image file `path`, in its own mode (file closed);
    `data`: the file's bytes, read already (`path` then only names it in errors).

    Raises:
      ImageReadError: not an image, truncated or corrupt (one line naming the file).
    """
    path = os.fspath(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            image.load()
    except _DECODING_ERRORS as error:
        raise ImageReadError(f"{path}: cannot read the image ({_one_line(error)})") from None
    return image


def _grey_to_8_bits(values: np.ndarray, mode: str, path: str) -> np.ndarray:
    """uint8 [H, W] of the integer or float grey values [H, W] of a mode I;16*, I or F file."""
    if mode == "F":
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ImageReadError(
                f"{path}: a 32-bit float (mode F) image must hold values in [0, 1], got "
                f"{np.nanmin(values):g}..{np.nanmax(values):g}; convert it to 8 or 16 bits"
            )
        return np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() > _MAX_16:
        raise ImageReadError(
            f"{path}: a 32-bit integer (mode I) image must hold values in 0..{_MAX_16}, got "
            f"{values.min()}..{values.max()}; convert it to 8 or 16 bits"
        )
    # round(v / 257): 257 is odd, so v / 257 never ends in exactly .5.
    return ((values + 128) // 257).astype(np.uint8)


def read_rgb(path, data: bytes | None = None) -> np.ndarray:
    """uint8 [H, W, 3] pixels of the image file `path`, by the rules of the module docstring;
    `data`: the file's bytes, read already (`path` then only names it in errors).

    Raises:
      ImageReadError: not an image, truncated or corrupt, an unsupported mode, or values
        outside the range of their mode (one line naming the file).
    """
    path = os.fspath(path)
    image = load_image(path, data)
    mode = image.mode
    if mode in _CONVERTED_TO_RGB:
        return np.asarray(image.convert("RGB"))
    if mode in _PALETTE:
        # Through RGBA: PIL warns when it drops palette transparency on the way to RGB.
        return np.asarray(image.convert("RGBA"))[..., :3].copy()
    if mode in _GREY_16 or mode in ("I", "F"):
        grey = _grey_to_8_bits(np.asarray(image), mode, path)
        return np.repeat(grey[..., None], 3, axis=-1)
    raise ImageReadError(
        f"{path}: unsupported image mode {mode}; save it as 8- or 16-bit grey, RGB or RGBA"
    )
