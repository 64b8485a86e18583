"""Pictures of segmentations and training curves, written as PNG files.

numpy and Pillow draw the overlays and the prediction grid (pixel-exact tiles);
matplotlib draws the training curves through its Agg canvas (no pyplot, no GUI).
"""
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

_MAX_PALETTE_CLASSES = 1 << 24
_GRID_GAP = 4
_GRID_TEXT_ROW = 20
_GRID_COLUMN_TITLES = ("image", "ground truth", "prediction")
_CURVE_WIDTH_INCHES = 6.0
_CURVE_HEIGHT_INCHES = 2.5
_CURVE_DPI = 100


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
    palette = _palette_for([label_map], ignore_label) if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] == 0:
        raise ValueError(f"palette must have shape [K, 3], got {palette.shape}")
    ignored = label_map == ignore_label if ignore_label is not None else np.zeros(label_map.shape, bool)
    out_of_range = ((label_map < 0) | (label_map >= palette.shape[0])) & ~ignored
    if np.any(out_of_range):
        raise ValueError(
            f"label_map has labels outside [0, {palette.shape[0]}) and not ignored: "
            f"{np.unique(label_map[out_of_range]).tolist()}")
    coloured = (label_map > 0) & ~ignored
    colours = palette[np.where(coloured, label_map, 0)].astype(np.float64)
    blended = np.rint((1.0 - alpha) * image + alpha * colours).astype(np.uint8)
    return np.where(coloured[..., None], blended, image)


def _make_parent_directory(path):
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)


def _write_png(path, pixels):
    _make_parent_directory(path)
    Image.fromarray(pixels).save(path, format="PNG")


def save_overlay_png(path, image, label_map, alpha=0.5, palette=None, ignore_label=255):
    """Writes `overlay(image, label_map, ...)` as an `[H, W]` RGB PNG at `path`."""
    _write_png(path, overlay(image, label_map, alpha=alpha, palette=palette, ignore_label=ignore_label))


def _legend_rows(class_names, palette, width, font):
    """Lays out (x, row, colour, name) legend entries wrapped to `width` pixels."""
    entries, x, row = [], _GRID_GAP, 0
    for name, colour in zip(class_names, palette):
        entry_width = _GRID_TEXT_ROW + int(np.ceil(font.getlength(name))) + 2 * _GRID_GAP
        if x > _GRID_GAP and x + entry_width > width:
            x, row = _GRID_GAP, row + 1
        entries.append((x, row, tuple(int(c) for c in colour), name))
        x += entry_width
    return entries, (row + 1 if entries else 0)


def save_prediction_grid(path, images, ground_truth, predictions, class_names=None,
                         scale=2, alpha=0.5, ignore_label=255):
    """Writes a PNG with one row per example: image | ground-truth overlay | prediction overlay.

    Layout in pixels, with tiles of `h = H·scale` by `w = W·scale` (nearest-neighbour
    upscaling), gap g = 4 and text rows t = 20 on a white background: a title row of
    height t, then N rows of tiles each followed by a gap, then (with `class_names`)
    legend rows of height t. Tile (row r, column c) has its top-left corner at
    x = g + c·(w + g), y = t + r·(h + g). The picture is `3·w + 4·g` wide and
    `t + N·(h + g) + legend_rows·t` high.

    Args:
      path: output PNG path (parent directories are created).
      images: `[N, H, W, 3]` uint8, or float in [0, 1].
      ground_truth: `[N, H, W]` int labels.
      predictions: `[N, H, W]` int labels.
      class_names: optional K names; sets the palette size and adds a colour legend.
      scale: integer upscaling factor >= 1.
      alpha, ignore_label: as in `overlay`.
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
        class_names = []
        palette = _palette_for([ground_truth, predictions], ignore_label)

    num_rows, height, width = images.shape[:3]
    tile_h, tile_w = height * scale, width * scale
    grid_w = 3 * tile_w + 4 * _GRID_GAP
    font = ImageFont.load_default()
    legend, legend_rows = _legend_rows(class_names, palette, grid_w, font)
    grid_h = _GRID_TEXT_ROW + num_rows * (tile_h + _GRID_GAP) + legend_rows * _GRID_TEXT_ROW
    canvas = np.full((grid_h, grid_w, 3), 255, np.uint8)
    for row in range(num_rows):
        image = _as_uint8_image(images[row], name="images")
        tiles = (image,
                 overlay(image, ground_truth[row], alpha, palette, ignore_label),
                 overlay(image, predictions[row], alpha, palette, ignore_label))
        top = _GRID_TEXT_ROW + row * (tile_h + _GRID_GAP)
        for column, tile in enumerate(tiles):
            left = _GRID_GAP + column * (tile_w + _GRID_GAP)
            canvas[top:top + tile_h, left:left + tile_w] = np.repeat(np.repeat(tile, scale, 0), scale, 1)

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for column, title in enumerate(_GRID_COLUMN_TITLES):
        draw.text((_GRID_GAP + column * (tile_w + _GRID_GAP), 4), title, fill=(0, 0, 0), font=font)
    legend_top = _GRID_TEXT_ROW + num_rows * (tile_h + _GRID_GAP)
    swatch = _GRID_TEXT_ROW - 2 * _GRID_GAP
    for x, legend_row, colour, name in legend:
        y = legend_top + legend_row * _GRID_TEXT_ROW + _GRID_GAP
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour, outline=(0, 0, 0))
        draw.text((x + swatch + _GRID_GAP, y), name, fill=(0, 0, 0), font=font)
    _write_png(path, np.asarray(picture))


def save_training_curves(path, history):
    """Writes a PNG with one subplot per metric, stacked vertically, value against step.

    The picture is 600 pixels wide and 250 pixels high per metric.

    Args:
      path: output PNG path (parent directories are created).
      history: dict name -> sequence of (step, value) pairs, e.g.
        {"train_loss": [(0, 1.2), (50, 0.4)], "val_miou": [(100, 0.8)]}.
        A metric with no pairs yet gets an empty subplot.
    """
    if not history:
        raise ValueError("history must name at least one metric")
    series = {}
    for name, pairs in history.items():
        message = f"history[{name!r}] must be a sequence of (step, value) pairs"
        try:
            points = np.asarray(pairs, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(message) from error
        if points.size == 0:
            points = points.reshape(0, 2)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(message)
        series[name] = points

    figure = Figure(figsize=(_CURVE_WIDTH_INCHES, _CURVE_HEIGHT_INCHES * len(series)), dpi=_CURVE_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    for ax, (name, points) in zip(axes, series.items()):
        ax.plot(points[:, 0], points[:, 1], marker="." if len(points) < 50 else None)
        if len(points) == 0:
            ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    _make_parent_directory(path)
    figure.savefig(path, format="png", dpi=_CURVE_DPI)
