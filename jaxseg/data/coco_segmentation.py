"""COCO segmentations (polygons, uncompressed and compressed RLE) decoded into masks, checked.

Every malformed input (odd coordinate counts, non-numbers, bad RLE characters, run
lengths that do not cover the image, an RLE of another size) is an `Unusable` error whose
message names the kind in the plural, for the builders' skip reports.
"""

import numpy as np
from pycocotools import mask as mask_utils

from jaxseg.data import shapes
from jaxseg.schema import is_finite_number

_MALFORMED = "annotations with malformed segmentations"


class Unusable(ValueError):
    """An image or annotation the builder skips; the message says why (in the plural)."""


def _compressed_counts(counts: bytes) -> list[int]:
    """The run lengths of a COCO compressed-RLE string.

    Each count is written in 5-bit groups, least significant first, as characters
    48 + group, bit 0x20 set on all but the last group; the last group's bit 0x10 is the
    sign. From the third count on, the value is stored as the difference to the count two
    before it.
    """
    values, value, shift = [], 0, 0
    for character in counts:
        group = character - 48
        if not 0 <= group < 64:
            raise Unusable(_MALFORMED)
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
        value, shift = 0, 0
    if shift:
        raise Unusable(_MALFORMED)
    return values


def _polygon_rle(polygons, height: int, width: int) -> dict:
    if not all(
        isinstance(polygon, list) and len(polygon) % 2 == 0 and all(map(is_finite_number, polygon))
        for polygon in polygons
    ):
        raise Unusable(_MALFORMED)
    kept = [polygon for polygon in polygons if len(polygon) >= 6]
    if not kept:
        raise Unusable("annotations with empty or degenerate polygons")
    return mask_utils.merge(mask_utils.frPyObjects(kept, height, width))


def _rle(segmentation: dict, height: int, width: int) -> dict:
    size, counts = segmentation["size"], segmentation["counts"]
    if list(size) != [height, width]:
        raise Unusable("annotations with an RLE of another size than the image")
    if isinstance(counts, list) and all(shapes.is_integer(c) and c >= 0 for c in counts):
        runs = counts
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(counts, str) and counts.isascii():
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
        runs = _compressed_counts(rle["counts"])
    else:
        raise Unusable(_MALFORMED)
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise Unusable(_MALFORMED)
    return rle


def segmentation_rle(segmentation, height: int, width: int) -> dict:
    """The compressed RLE ({"size": [height, width], "counts": bytes}) of a COCO polygon or
    RLE segmentation; polygons are rasterized (and merged) by pycocotools.

    Raises:
      Unusable: the segmentation is missing, malformed, empty or of another size.
    """
    if isinstance(segmentation, list):
        return _polygon_rle(segmentation, height, width)
    if isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        return _rle(segmentation, height, width)
    raise Unusable("annotations without a usable segmentation")


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """uint8 [height, width] 0/1 mask of a COCO polygon or RLE segmentation.

    Raises:
      Unusable: the segmentation is missing, malformed, empty or of another size.
    """
    return mask_utils.decode(segmentation_rle(segmentation, height, width))
