"""Pictures of panoptic maps: stuff in opaque class colours, things in instance colours with
outlines and class labels, VOID in the ignore colour.

A panoptic map is an id map `[H, W]` (0 = VOID) with its segments: dicts with "id",
"isthing" and "label" (a thing's class in `thing_names`, a stuff segment's semantic label
in `stuff_names`), as `jaxseg.ops.panoptic_fusion.fuse_panoptic` returns them.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxseg.visualize import IGNORE_COLOUR, add_legend, class_palette, tile_grid, write_png
from jaxseg.visualize_instances import draw_label

OUTLINE_COLOUR = (0, 0, 0)
_COLUMN_TITLES = ("image", "ground truth", "prediction")
CAPTION = "stuff: class colours (legend); things: one colour per instance, black outline, class label"


def thing_colours(count: int, num_stuff: int) -> np.ndarray:
    """uint8 [count, 3] instance colours, none of them one of the `num_stuff` stuff colours."""
    return class_palette(num_stuff + count)[num_stuff:]


def _outline(ids: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels with a 4-neighbour of another id."""
    edge = np.zeros(ids.shape, bool)
    edge[1:] |= ids[1:] != ids[:-1]
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return edge


def draw_panoptic(ids: np.ndarray, segments: list[dict], stuff_names, thing_names) -> np.ndarray:
    """uint8 [H, W, 3]: the panoptic map `ids` int [H, W] with its `segments` drawn as the
    module docstring says (things outlined where they meet another segment or VOID,
    labelled by class name at their top-left corner)."""
    ids = np.asarray(ids)
    stuff_palette = class_palette(len(stuff_names))
    picture = np.zeros(ids.shape + (3,), np.uint8)
    picture[:] = IGNORE_COLOUR
    things = [s for s in segments if s["isthing"]]
    for segment in segments:
        if not segment["isthing"]:
            picture[ids == segment["id"]] = stuff_palette[segment["label"]]
    for segment, colour in zip(things, thing_colours(len(things), len(stuff_names))):
        picture[ids == segment["id"]] = colour
    thing_pixels = np.isin(ids, [s["id"] for s in things])
    picture[_outline(ids) & thing_pixels] = OUTLINE_COLOUR
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for segment, colour in zip(things, thing_colours(len(things), len(stuff_names))):
        rows, columns = np.nonzero(ids == segment["id"])
        if rows.size:
            draw_label(draw, font, str(thing_names[segment["label"]]), int(columns.min()), int(rows.min()),
                       tuple(int(c) for c in colour), ids.shape[1])
    return np.asarray(canvas)


def legend_entries(maps: list[tuple[np.ndarray, list[dict]]], stuff_names) -> list[tuple[str, tuple]]:
    """(name, colour) of the stuff classes that appear in `maps` (id map, segments), in
    label order, then ("void", IGNORE_COLOUR) if a map has VOID pixels."""
    palette = class_palette(len(stuff_names))
    labels = sorted({s["label"] for _, segments in maps for s in segments if not s["isthing"]})
    entries = [(str(stuff_names[k]), tuple(int(c) for c in palette[k])) for k in labels]
    if any((np.asarray(ids) == 0).any() for ids, _ in maps):
        entries.append(("void", IGNORE_COLOUR))
    return entries


def save_panoptic_grid(path, images, ground_truths, predictions, stuff_names, thing_names, scale: int = 2) -> None:
    """Writes a PNG with one row per example: image | ground truth | prediction, each map
    drawn by `draw_panoptic` after a nearest-neighbour upscale by `scale`, and a legend of
    the stuff classes under them (`jaxseg.visualize.add_legend`, with `CAPTION`).

    Args:
      images: `[N, H, W, 3]` uint8.
      ground_truths, predictions: N (ids [H, W], segments) pairs.
      stuff_names, thing_names: the semantic head's and the thing classes' names.
    """
    images = np.asarray(images)
    if images.ndim != 4 or not len(images) or len(ground_truths) != len(images) or len(predictions) != len(images):
        raise ValueError(f"images [N, H, W, 3] (N >= 1) and N ground truths and predictions are needed, got "
                         f"{images.shape}, {len(ground_truths)} and {len(predictions)}")

    def up(array):
        return np.repeat(np.repeat(np.asarray(array), scale, axis=0), scale, axis=1)

    rows = [
        [up(image)] + [draw_panoptic(up(ids), segments, stuff_names, thing_names) for ids, segments in (truth, guess)]
        for image, truth, guess in zip(images, ground_truths, predictions)
    ]
    entries = legend_entries(list(ground_truths) + list(predictions), stuff_names)
    write_png(path, add_legend(tile_grid(rows, _COLUMN_TITLES), entries, caption=CAPTION))
