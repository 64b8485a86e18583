"""Pictures of segmentations, written as PNG files (training curves: `training_curves`).

numpy and Pillow draw the overlays, label maps, error maps, legends and the prediction
grid (pixel-exact tiles).
"""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_MAX_PALETTE_CLASSES = 1 << 24
_GRID_GAP = 4
_GRID_TEXT_ROW = 20
_GRID_COLUMN_TITLES = ("image", "ground truth", "prediction", "errors")
# PASCAL VOC's colour for its ignored label 255: class_palette(256)[255], so no class
# below 255 has it.
IGNORE_COLOUR = (224, 224, 192)
# No class below 2**21 has it (its red channel needs all eight palette bits).
ERROR_COLOUR = (255, 0, 0)
# Right pixels of the error panel show the image's luminance times this factor.
ERROR_DIMMING = 0.4
ERROR_CAPTION = "errors panel: red = wrong pixel, dimmed image = right pixel; ignored pixels are not scored"


def class_palette(num_classes):
    """Distinct colours for `num_classes` classes; class 0 (background) is black.

    The colour of class i spreads the bits of i over the three channels, most
    significant colour bits first (the PASCAL VOC scheme): 1 is (128, 0, 0), 2 is
    (0, 128, 0), 3 is (128, 128, 0), ... Distinct i give distinct colours.

    Returns:
      `[K, 3]` uint8.
    """
    if not isinstance(num_classes, (int, np.integer)) or not 1 <= num_classes <= _MAX_PALETTE_CLASSES:
        raise ValueError(f"num_classes must be an int in [1, {_MAX_PALETTE_CLASSES}], got {num_classes!r}")
    index = np.arange(num_classes, dtype=np.int64)
    palette = np.zeros((num_classes, 3), np.int64)
    for level in range(8):
        for channel in range(3):
            bit = (index >> (3 * level + channel)) & 1
            palette[:, channel] |= bit << (7 - level)
    return palette.astype(np.uint8)


def _as_uint8_image(image, name="image"):
    """`[H, W, 3]` uint8 from uint8 or float in [0, 1] (clipped) input."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [H, W, 3], got {image.shape}")
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {image.dtype}")
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_label_map(label_map, image_shape, name="label_map"):
    label_map = np.asarray(label_map)
    if label_map.shape != image_shape[:2]:
        raise ValueError(f"{name} shape {label_map.shape} must equal the image's [H, W] {image_shape[:2]}")
    if not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {label_map.dtype}")
    return label_map


def _check_palette(palette):
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] == 0:
        raise ValueError(f"palette must have shape [K, 3], got {palette.shape}")
    return palette


def _is_ignored(label_map, ignore_label):
    """bool of `label_map`'s shape: pixels labelled `ignore_label` (None: none)."""
    return label_map == ignore_label if ignore_label is not None else np.zeros(label_map.shape, bool)


def _ignored_pixels(label_map, palette, ignore_label):
    """bool of `label_map`'s shape: `ignore_label` pixels; raises on other labels outside the palette."""
    ignored = _is_ignored(label_map, ignore_label)
    out_of_range = ((label_map < 0) | (label_map >= palette.shape[0])) & ~ignored
    if np.any(out_of_range):
        raise ValueError(
            f"label_map has labels outside [0, {palette.shape[0]}) and not ignored: "
            f"{np.unique(label_map[out_of_range]).tolist()}")
    return ignored


def _palette_for(label_maps, ignore_label):
    """The default palette covering every non-ignored label in `label_maps`."""
    largest = max((int(m[m != ignore_label].max(initial=0)) for m in label_maps), default=0)
    return class_palette(largest + 1)


def overlay(image, label_map, alpha=0.5, palette=None, ignore_label=255):
    """Blends class colours over an image.

    Each pixel with a label in `[1, K)` becomes `round((1 - alpha)·image + alpha·colour)`;
    background (label 0) and `ignore_label` pixels keep the image's value.

    Args:
      image: `[H, W, 3]` uint8, or float in [0, 1] (clipped).
      label_map: `[H, W]` int.
      alpha: colour opacity in [0, 1].
      palette: `[K, 3]` uint8 colours (default `class_palette` of the largest label + 1).
      ignore_label: label left uncoloured (None: none).

    Returns:
      `[H, W, 3]` uint8.
    """
    image = _as_uint8_image(image)
    label_map = _check_label_map(label_map, image.shape)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    palette = _check_palette(_palette_for([label_map], ignore_label) if palette is None else palette)
    coloured = (label_map > 0) & ~_ignored_pixels(label_map, palette, ignore_label)
    colours = palette[np.where(coloured, label_map, 0)].astype(np.float64)
    blended = np.rint((1.0 - alpha) * image + alpha * colours).astype(np.uint8)
    return np.where(coloured[..., None], blended, image)


def colour_label_map(label_map, palette, ignore_label=255):
    """Paints a label map opaquely: label k becomes `palette[k]`, `ignore_label` `IGNORE_COLOUR`.

    Args:
      label_map: `[H, W]` int.
      palette: `[K, 3]` uint8 colours.
      ignore_label: label painted `IGNORE_COLOUR` (None: none).

    Returns:
      `[H, W, 3]` uint8.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"label_map must be [H, W] int, got {label_map.dtype} {label_map.shape}")
    palette = _check_palette(palette)
    ignored = _ignored_pixels(label_map, palette, ignore_label)
    picture = palette[np.where(ignored, 0, label_map)].astype(np.uint8)
    picture[ignored] = IGNORE_COLOUR
    return picture


def error_map(image, ground_truth, prediction, ignore_label=255):
    """Marks the wrong pixels of a prediction over a dimmed grey copy of the image.

    Pixels whose ground truth is `ignore_label` become `IGNORE_COLOUR`; other pixels
    where `prediction != ground_truth` become `ERROR_COLOUR`; the right ones become
    grey `round(ERROR_DIMMING·(0.299·R + 0.587·G + 0.114·B))` in all three channels.

    Args:
      image: `[H, W, 3]` uint8, or float in [0, 1] (clipped).
      ground_truth: `[H, W]` int labels.
      prediction: `[H, W]` int labels.
      ignore_label: ground-truth label that is not scored (None: none).

    Returns:
      `[H, W, 3]` uint8.
    """
    image = _as_uint8_image(image)
    ground_truth = _check_label_map(ground_truth, image.shape, "ground_truth")
    prediction = _check_label_map(prediction, image.shape, "prediction")
    luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = np.rint(ERROR_DIMMING * luminance).astype(np.uint8)
    picture = np.repeat(grey[..., None], 3, axis=-1)
    ignored = _is_ignored(ground_truth, ignore_label)
    picture[(prediction != ground_truth) & ~ignored] = ERROR_COLOUR
    picture[ignored] = IGNORE_COLOUR
    return picture


def legend_entries(label_maps, palette, class_names=None, ignore_label=255):
    """The legend of the classes drawn in `label_maps`: one (name, colour) per class present.

    Classes come in increasing order, named by `class_names` (default: their number) and
    coloured `palette[k]`; ("ignored", `IGNORE_COLOUR`) follows when a pixel is `ignore_label`.

    Args:
      label_maps: int arrays of any shapes (e.g. `[N, H, W]` ground truth and predictions).
      palette: `[K, 3]` uint8 colours.
      class_names: K names, or None.
      ignore_label: label listed as "ignored" (None: none).

    Returns:
      list of (str, (r, g, b) ints).
    """
    palette = _check_palette(palette)
    present = np.unique(np.concatenate([np.ravel(m) for m in label_maps]))
    ignored = _ignored_pixels(present, palette, ignore_label)
    entries = [(str(k) if class_names is None else class_names[k], tuple(int(c) for c in palette[k]))
               for k in present[~ignored].tolist()]
    return entries + [("ignored", IGNORE_COLOUR)] if np.any(ignored) else entries


def wrap_text(text, font, width):
    """Splits `text` at spaces into lines at most `width` pixels wide in `font`.

    A word wider than `width` gets a line of its own. No-break spaces (U+00A0) do not
    split; they come back as plain spaces (Pillow's default font has no glyph for them).

    Returns:
      list of str.
    """
    lines = []
    for word in text.split(" "):
        word = word.replace("\u00a0", " ")
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _legend_entry_width(name, font):
    return _GRID_TEXT_ROW + int(np.ceil(font.getlength(name))) + 2 * _GRID_GAP


def _legend_layout(entries, width, font):
    """(x, row, colour, name) of each legend entry, wrapped to `width` pixels; the row count."""
    placed, x, row = [], _GRID_GAP, 0
    for name, colour in entries:
        entry_width = _legend_entry_width(name, font)
        if x > _GRID_GAP and x + entry_width > width:
            x, row = _GRID_GAP, row + 1
        placed.append((x, row, colour, name))
        x += entry_width
    return placed, (row + 1 if placed else 0)


def add_legend(picture, entries, caption=None):
    """Appends a white legend strip below a picture: a swatch and a name per entry, then a caption.

    Entries are laid out left to right in rows of height t = 20 (a new row when the next
    one would not fit); each has a `(t - 8)`-pixel square swatch of its colour with a black
    outline, then its name. Caption lines (wrapped at spaces) follow, t high each.

    Args:
      picture: `[H, W, 3]` uint8.
      entries: (name, (r, g, b)) pairs, e.g. from `legend_entries`.
      caption: text under the entries, or None.

    Returns:
      `[H + (rows + caption lines)·t, W', 3]` uint8, W' = W widened (white) to the widest
      entry when one is wider than the picture; the picture's pixels are kept at the top left.
    """
    picture = _as_uint8_image(picture, name="picture")
    font = ImageFont.load_default()
    height, width = picture.shape[:2]
    width = max([width] + [_GRID_GAP + _legend_entry_width(name, font) for name, _ in entries])
    placed, rows = _legend_layout(entries, width, font)
    caption_lines = [] if caption is None else wrap_text(caption, font, width - 2 * _GRID_GAP)
    canvas = np.full((height + (rows + len(caption_lines)) * _GRID_TEXT_ROW, width, 3), 255, np.uint8)
    canvas[:height, :picture.shape[1]] = picture
    strip = Image.fromarray(canvas)
    draw = ImageDraw.Draw(strip)
    swatch = _GRID_TEXT_ROW - 2 * _GRID_GAP
    for x, row, colour, name in placed:
        y = height + row * _GRID_TEXT_ROW + _GRID_GAP
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=tuple(colour), outline=(0, 0, 0))
        draw.text((x + swatch + _GRID_GAP, y), name, fill=(0, 0, 0), font=font)
    for line_number, line in enumerate(caption_lines):
        y = height + (rows + line_number) * _GRID_TEXT_ROW + _GRID_GAP
        draw.text((_GRID_GAP, y), line, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def tile_grid(rows, titles):
    """Lays out equally sized tiles in rows under a row of column titles, on white.

    With tiles of h by w pixels, gap g = 4 and title row t = 20: tile (row r, column c)
    has its top-left corner at x = g + c·(w + g), y = t + r·(h + g); each title is
    written at (g + c·(w + g), 4). The grid is `C·w + (C + 1)·g` wide and
    `t + N·(h + g)` high.

    Args:
      rows: N >= 1 sequences of C tiles, each `[h, w, 3]` uint8.
      titles: C column titles.

    Returns:
      `[t + N·(h + g), C·w + (C + 1)·g, 3]` uint8.
    """
    tiles = np.asarray(rows)
    if tiles.ndim != 5 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8 or tiles.shape[1] != len(titles):
        raise ValueError(f"rows must be N rows of {len(titles)} uint8 [h, w, 3] tiles, "
                         f"got {tiles.dtype} {tiles.shape}")
    num_rows, num_columns, tile_h, tile_w = tiles.shape[:4]
    canvas = np.full((_GRID_TEXT_ROW + num_rows * (tile_h + _GRID_GAP),
                      num_columns * tile_w + (num_columns + 1) * _GRID_GAP, 3), 255, np.uint8)
    for row in range(num_rows):
        top = _GRID_TEXT_ROW + row * (tile_h + _GRID_GAP)
        for column in range(num_columns):
            left = _GRID_GAP + column * (tile_w + _GRID_GAP)
            canvas[top:top + tile_h, left:left + tile_w] = tiles[row, column]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for column, title in enumerate(titles):
        draw.text((_GRID_GAP + column * (tile_w + _GRID_GAP), 4), title, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def make_parent_directory(path):
    """Creates the directories above the file `path` (none for a bare file name)."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)


def write_png(path, pixels):
    """Writes `[H, W, 3]` uint8 pixels as an RGB PNG at `path` (parent directories are created)."""
    make_parent_directory(path)
    Image.fromarray(pixels).save(path, format="PNG")


def save_overlay_png(path, image, label_map, alpha=0.5, palette=None, ignore_label=255):
    """Writes `overlay(image, label_map, ...)` as an `[H, W]` RGB PNG at `path`."""
    write_png(path, overlay(image, label_map, alpha=alpha, palette=palette, ignore_label=ignore_label))


def _upscaled(tile, scale):
    return np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


def save_prediction_grid(path, images, ground_truth, predictions, class_names=None, scale=2,
                         ignore_label=255):
    """Writes a PNG with one row per example: image | ground truth | prediction | errors.

    The ground truth and the prediction are opaque label maps (`colour_label_map`), the
    errors panel is `error_map`; all are upscaled `scale` times (nearest neighbour) and
    laid out by `tile_grid` (tiles `H·scale` by `W·scale`, 4 columns). `add_legend` then
    lists the classes present in the ground truth or the predictions (`legend_entries`)
    and explains the errors panel (`ERROR_CAPTION`).

    Args:
      path: output PNG path (parent directories are created).
      images: `[N, H, W, 3]` uint8, or float in [0, 1].
      ground_truth: `[N, H, W]` int labels.
      predictions: `[N, H, W]` int labels.
      class_names: optional K names; sets the palette size and names the legend's classes
        (default: `class_palette` of the largest label + 1, classes named by number).
      scale: integer upscaling factor >= 1.
      ignore_label: ground-truth label that is not scored (None: none).
    """
    images = np.asarray(images)
    ground_truth = np.asarray(ground_truth)
    predictions = np.asarray(predictions)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [N, H, W, 3] with N >= 1, got {images.shape}")
    for name, maps in (("ground_truth", ground_truth), ("predictions", predictions)):
        if maps.shape != images.shape[:3]:
            raise ValueError(f"{name} shape {maps.shape} must equal images' [N, H, W] {images.shape[:3]}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if not class_names:
            raise ValueError("class_names must name at least one class, or be None")
        palette = class_palette(len(class_names))
    else:
        palette = _palette_for([ground_truth, predictions], ignore_label)

    rows = []
    for image, truth, prediction in zip(images, ground_truth, predictions):
        image = _as_uint8_image(image, name="images")
        tiles = (image,
                 colour_label_map(truth, palette, ignore_label),
                 colour_label_map(prediction, palette, ignore_label),
                 error_map(image, truth, prediction, ignore_label))
        rows.append([_upscaled(tile, scale) for tile in tiles])
    entries = legend_entries([ground_truth, predictions], palette, class_names, ignore_label)
    write_png(path, add_legend(tile_grid(rows, _GRID_COLUMN_TITLES), entries, ERROR_CAPTION))
