"""Pictures of detected instances: coloured masks, box outlines and "name score" labels.

numpy blends the masks; Pillow draws the outlines, labels and notes (its default font).
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxseg.visualize import class_palette, tile_grid, wrap_text, write_png

_LABEL_PADDING = 1
_DARK_TEXT = (0, 0, 0)
_LIGHT_TEXT = (255, 255, 255)
_LIGHT_BACKGROUND_LUMINANCE = 140.0
_GRID_COLUMN_TITLES = ("image", "ground truth", "prediction")


def instance_colours(count):
    """Distinct colours for `count` instances: `class_palette` entries 1..count.

    Returns:
      `[count, 3]` uint8.
    """
    return class_palette(count + 1)[1:]


def _check_image(image, name="image"):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 with shape [H, W, 3], got {image.dtype} {image.shape}")
    return image


def _check_vector(values, count, name):
    values = np.asarray(values)
    if values.shape != (count,):
        raise ValueError(f"{name} must have shape [{count}], got {values.shape}")
    return values


def _drawn_instances(boxes, scores, classes, masks, valid, image_shape, num_classes, score_threshold):
    """Validates the detections and returns the indices of those to draw."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [D, 4], got {boxes.shape}")
    count = len(boxes)
    classes = _check_vector(classes, count, "classes")
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must have an integer dtype, got {classes.dtype}")
    drawn = np.ones(count, bool) if valid is None else _check_vector(valid, count, "valid").astype(bool)
    if scores is not None:
        drawn &= _check_vector(scores, count, "scores") >= score_threshold
    if masks is not None and masks.shape != (count,) + image_shape[:2]:
        raise ValueError(f"masks must have shape [{count}, {image_shape[0]}, {image_shape[1]}], "
                         f"got {masks.shape}")
    indices = np.flatnonzero(drawn)
    if not np.all(np.isfinite(boxes[indices])):
        raise ValueError("boxes of drawn instances must be finite")
    out_of_range = classes[indices][(classes[indices] < 0) | (classes[indices] >= num_classes)]
    if out_of_range.size:
        raise ValueError(f"classes must lie in [0, {num_classes}) (class_names), got {out_of_range.tolist()}")
    return indices


def _text_colour(background):
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return _DARK_TEXT if luminance > _LIGHT_BACKGROUND_LUMINANCE else _LIGHT_TEXT


def draw_label(draw, font, text, x, y, colour, image_width):
    """Writes `text` on a box of `colour` just above (x, y), or just below it at the top edge."""
    _, _, right, bottom = font.getbbox(text)
    label_w = right + 2 * _LABEL_PADDING
    label_h = bottom + 2 * _LABEL_PADDING
    x = min(max(x, 0), max(image_width - label_w, 0))
    y = y - label_h if y - label_h >= 0 else max(y, 0)
    draw.rectangle((x, y, x + label_w - 1, y + label_h - 1), fill=colour)
    draw.text((x + _LABEL_PADDING, y + _LABEL_PADDING), text, fill=_text_colour(colour), font=font)


def empty_panel_text(score_threshold):
    """What a panel with nothing drawn says: "no objects" for ground truth (threshold None),
    else e.g. "no detections with score >= 0.5" (no-break spaces around ">=", which stays
    on one line with the score).

    Returns:
      str.
    """
    if score_threshold is None:
        return "no objects"
    return f"no detections with score\u00a0>=\u00a0{score_threshold:g}"


def _draw_note(draw, font, text, image_width):
    """Writes `text` in white on a black box at the top-left corner, wrapped to the image's width."""
    lines = wrap_text(text, font, image_width - 2 * _LABEL_PADDING)
    line_h = font.getbbox("Ag")[3] + _LABEL_PADDING
    box_w = max(int(np.ceil(font.getlength(line))) for line in lines) + 2 * _LABEL_PADDING
    draw.rectangle((0, 0, box_w - 1, len(lines) * line_h + 2 * _LABEL_PADDING - 1), fill=_DARK_TEXT)
    for number, line in enumerate(lines):
        draw.text((_LABEL_PADDING, _LABEL_PADDING + number * line_h), line, fill=_LIGHT_TEXT, font=font)


def draw_instances(image, boxes, scores, classes, masks, valid, class_names, score_threshold=0.5,
                   alpha=0.5):
    """Draws instances on an image: blended masks, box outlines and "name score" labels.

    Instance k among the drawn ones (in input order) gets colour `instance_colours(...)[k]`:
    its mask pixels become `round((1 - alpha)·pixel + alpha·colour)` (later instances over
    earlier ones), then its box outline (1 pixel, inclusive corners (x1, y1) and
    (x2 - 1, y2 - 1) after rounding) and its label on a box of its colour above the box's
    top-left corner (below it when there is no room above) are drawn. When no instance is
    drawn, `empty_panel_text` is written in white on a black box at the top-left corner.

    Args:
      image: `[H, W, 3]` uint8.
      boxes: `[D, 4]` float (x1, y1, x2, y2), pixels, exclusive ends.
      scores: `[D]` float, or None (ground truth: every valid instance is drawn, labelled
        by its name alone).
      classes: `[D]` int labels indexing `class_names`.
      masks: `[D, H, W]` bool or 0/1, or None (boxes only).
      valid: `[D]` bool, or None (all valid). D may be 0.
      class_names: names of the K classes.
      score_threshold: instances with a score below it are not drawn.
      alpha: mask opacity in [0, 1].

    Returns:
      `[H, W, 3]` uint8; pixels under no drawn mask, outline, label or note keep the image's
      values.
    """
    image = _check_image(image)
    boxes = np.asarray(boxes, np.float64)
    masks = None if masks is None else np.asarray(masks)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    class_names = [str(name) for name in class_names]
    indices = _drawn_instances(boxes, scores, np.asarray(classes), masks, valid, image.shape,
                               len(class_names), score_threshold)
    colours = instance_colours(len(indices))
    picture = image.copy()
    if masks is not None:
        for index, colour in zip(indices, colours):
            covered = masks[index].astype(bool)
            blended = (1.0 - alpha) * picture[covered] + alpha * colour.astype(np.float64)
            picture[covered] = np.rint(blended).astype(np.uint8)
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, colour in zip(indices, colours):
        colour = tuple(int(c) for c in colour)
        x1, y1, x2, y2 = np.rint(boxes[index]).astype(int).tolist()
        draw.rectangle((x1, y1, max(x2 - 1, x1), max(y2 - 1, y1)), outline=colour)
        name = class_names[int(classes[index])]
        text = name if scores is None else f"{name} {float(scores[index]):.2f}"
        draw_label(draw, font, text, x1, y1, colour, image.shape[1])
    if not len(indices):
        _draw_note(draw, font, empty_panel_text(None if scores is None else score_threshold),
                   image.shape[1])
    return np.asarray(canvas)


def _upscaled(instances, scale):
    """Boxes and masks of an instance dict for an image `scale` times larger."""
    masks = instances.get("masks")
    if masks is not None:
        masks = np.repeat(np.repeat(np.asarray(masks), scale, axis=-2), scale, axis=-1)
    return np.asarray(instances["boxes"], np.float64) * scale, masks


def save_instance_grid(path, images, ground_truths, predictions, class_names, score_threshold=0.5,
                       scale=2, alpha=0.5):
    """Writes a PNG with one row per example: image | ground-truth instances | predicted instances.

    Images, masks and boxes are upscaled by `scale` (nearest neighbour) before drawing, so
    labels stay legible. Layout by `jaxseg.visualize.tile_grid`: tiles of `h = H·scale` by
    `w = W·scale`, gap g = 4, a title row t = 20 on a white background; tile (row r,
    column c) has its top-left corner at x = g + c·(w + g), y = t + r·(h + g); the picture
    is `3·w + 4·g` by `t + N·(h + g)`.

    Args:
      path: output PNG path (parent directories are created).
      images: `[N, H, W, 3]` uint8.
      ground_truths: N dicts with boxes `[n, 4]`, labels `[n]`, masks `[n, H, W]` (or
        None) and optionally instance_valid `[n]` bool (the padded batch fields).
      predictions: N dicts with boxes `[D, 4]`, scores `[D]`, classes `[D]`, and
        optionally masks `[D, H, W]` and valid `[D]` bool.
      class_names: names of the K classes.
      score_threshold, alpha: as in `draw_instances` (the threshold applies to predictions).
      scale: integer upscaling factor >= 1.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [N, H, W, 3] with N >= 1, got {images.shape}")
    for name, instances in (("ground_truths", ground_truths), ("predictions", predictions)):
        if len(instances) != len(images):
            raise ValueError(f"{name} must hold one dict per image ({len(images)}), got {len(instances)}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")

    rows = []
    for image, truth, prediction in zip(images, ground_truths, predictions):
        image = _check_image(image, name="images").repeat(scale, axis=0).repeat(scale, axis=1)
        truth_boxes, truth_masks = _upscaled(truth, scale)
        predicted_boxes, predicted_masks = _upscaled(prediction, scale)
        rows.append((
            image,
            draw_instances(image, truth_boxes, None, truth["labels"], truth_masks,
                           truth.get("instance_valid"), class_names, alpha=alpha),
            draw_instances(image, predicted_boxes, prediction["scores"], prediction["classes"],
                           predicted_masks, prediction.get("valid"), class_names,
                           score_threshold=score_threshold, alpha=alpha),
        ))
    write_png(path, tile_grid(rows, _GRID_COLUMN_TITLES))
