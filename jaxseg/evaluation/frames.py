"""The frame a split's instance predictions are scored in: its ground truth, ids and geometry.

The model sees every image on an S x S canvas: resized with its aspect ratio kept as the
data's `Fit` says (default: the longer side S), then padded at the bottom and right
(`jaxseg.data.geometry`). An
`InstanceFrame` says how the detections on those canvases become COCO results in the
dataset's own frame, and what they are scored against:

- `canvas_frame` (the shapes dataset): the frame is the canvas.
  The ground truth is converted from the decoded examples (`ground_truth_to_coco`), image
  ids are the examples' positions in the split, category ids the labels 1..K-1.
- `coco_json_frame` (COCO-format folders): the source images' own pixels. The ground truth
  is the user's instances JSON: its image ids, its category ids, its crowd annotations
  (detections matched to a crowd region are ignored, as COCO's evaluation ignores them) and
  the areas it gives (so AP small / medium / large use the source's pixels). Only the
  split's images are evaluated (pycocotools' `params.imgIds`).
- `objects_frame` (the TFDS COCO datasets): the source images' own pixels, the objects as
  the dataset gives them at that size (`jaxseg.data.catalog_truth`), crowd regions included,
  with COCO's category ids.

`image_results` maps one image's canvas detections into the frame as detectron2 does: boxes
scaled by the inverse of the resize and clipped to the image, each mask's M x M
probabilities pasted at its scaled box in the image's own pixels (bilinear), binarized, and
RLE-encoded from the pixels its box reaches (`coco.encode_region`), so no full-size mask is
ever made.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from jaxseg.data import coco_json, coco_segmentation, geometry, shapes
from jaxseg.evaluation.coco import coco_index, encode_region, ground_truth_to_coco
from jaxseg.ops.mask_paste_host import paste_binary_region


@dataclasses.dataclass(frozen=True)
class InstanceFrame:
    """Where and against what the detections of a split's examples are scored.

    ground_truth: the COCO-format dict scored against (images, annotations, categories).
    image_ids: `image_ids[i]` is the ground truth's id of example i of the split.
    scored_ids: the images scored (None: `image_ids`); images without an example count
      with no detection.
    category_ids: `category_ids[k]` is the ground truth's category id of label k >= 1.
    placements: `placements[i]` is where example i's image lies on its canvas.
    """

    ground_truth: dict
    image_ids: tuple[int, ...]
    category_ids: tuple[int, ...]
    placements: tuple[geometry.Placement, ...]
    scored_ids: tuple[int, ...] | None = None

    _indexes: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def ground_truth_index(self, scorer: str = "pycocotools") -> COCO:
        """The `scorer` library's index of `ground_truth` (`coco.coco_index`), built at the
        first evaluation of the split and reused by every later one."""
        if scorer not in self._indexes:
            self._indexes[scorer] = coco_index(self.ground_truth, scorer)
        return self._indexes[scorer]

    @property
    def scored_image_ids(self) -> tuple[int, ...]:
        """The ground truth's images the AP is over (pycocotools' `params.imgIds`):
        `scored_ids`, or the examples' `image_ids` where None."""
        return self.image_ids if self.scored_ids is None else self.scored_ids


@dataclasses.dataclass(frozen=True)
class FrameDetections:
    """One image's valid detections in its frame, as `COCOEvaluator.add` takes them.

    image_id: the ground truth's id of the image.
    boxes: float32 [V, 4] (x1, y1, x2, y2) in the frame's pixels.
    scores: float32 [V].
    category_ids: int64 [V] the ground truth's category ids.
    rles: V COCO RLEs of the masks at the frame's size.
    """

    image_id: int
    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    rles: list


def image_results(
    placement: geometry.Placement,
    image_id: int,
    category_ids: tuple[int, ...],
    detections: dict,
    mask_threshold: float,
) -> FrameDetections:
    """One image's detections on its canvas, in its own pixels, with its id and category
    ids in the frame (small arguments: a worker process's work). Detections whose box is
    empty once in the image's pixels are dropped.

    Args:
      placement: where the image lies on its canvas.
      image_id: its id in the frame.
      category_ids: the frame's category id of each label.
      detections: the image's `MaskRCNN.detect(..., paste=False)` outputs on the canvas:
        boxes float32 [D, 4], scores [D], classes int32 [D] (labels), mask_probabilities
        float32 [D, M, M], valid bool [D].
      mask_threshold: masks are the pasted probabilities >= this.
    """
    valid = np.flatnonzero(detections["valid"])
    boxes = placement.boxes_to_image(np.asarray(detections["boxes"])[valid])
    # A box can become empty once scaled and clipped (float32 rounding): detectron2 drops
    # those after rescaling (`Boxes.nonempty`).
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep, boxes = valid[nonempty], boxes[nonempty]
    probabilities = np.asarray(detections["mask_probabilities"])[keep]
    rles = []
    for box, mask in zip(boxes, probabilities):
        rows, columns, region = paste_binary_region(
            mask, box, placement.height, placement.width, mask_threshold
        )
        rles.append(
            encode_region(region, rows.start, columns.start, placement.height, placement.width)
        )
    labels = np.asarray(detections["classes"])[keep]
    return FrameDetections(
        image_id=image_id,
        boxes=boxes,
        scores=np.asarray(detections["scores"], np.float32)[keep],
        category_ids=np.asarray(category_ids, np.int64)[labels],
        rles=rles,
    )


def ids_and_placements(source) -> tuple[tuple[int, ...], tuple[geometry.Placement, ...]]:
    """Every example's dataset id and placement, in the split's order."""
    indices = range(len(source))
    return (
        tuple(source.image_id(index) for index in indices),
        tuple(source.placement(index) for index in indices),
    )


def canvas_frame(source, class_names) -> InstanceFrame:
    """The frame of a dataset scored on its canvases (module docstring).

    Args:
      source: a `pipeline.DecodedSource` of the split.
      class_names: the K class names, the background first.
    """
    examples = (source[index] for index in range(len(source)))
    return InstanceFrame(
        ground_truth=ground_truth_to_coco(examples, class_names),
        image_ids=tuple(range(len(source))),
        category_ids=tuple(range(len(class_names))),
        placements=ids_and_placements(source)[1],
    )


def _mask_fields(mask: np.ndarray) -> tuple[dict, float, list[float]]:
    """A uint8 [h, w] 0/1 mask's COCO annotation fields: its RLE (JSON counts), area
    (pixel count) and tight bbox [x, y, w, h], as pycocotools computes them."""
    encoded = mask_utils.encode(np.asfortranarray(mask, np.uint8))
    rle = {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}
    return rle, float(mask_utils.area(encoded)), [float(v) for v in mask_utils.toBbox(encoded)]


def objects_frame(source, objects_of, category_ids, categories) -> InstanceFrame:
    """The frame of a dataset whose examples give their objects in their source pixels.

    Args:
      source: a `pipeline.DecodedSource` of the split (ids and placements).
      objects_of: index -> the example's objects, each with `label` (1..K-1), `crowd`
        (bool) and `mask` (uint8 [h, w] at the source size).
      category_ids: `category_ids[k]` the category id of label k >= 1 (`[0]` unused).
      categories: the COCO categories [{id, name}].

    The ground truth has one image per example (its id and source size) and one
    annotation per object: its mask's RLE, area (pixel count) and tight box, `iscrowd`.
    """
    images, annotations = [], []
    image_ids, placements = ids_and_placements(source)
    repeated = sorted(i for i, count in collections.Counter(image_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"the split's image ids repeat ({repeated[:5]}): each image needs its own")
    for index, (image_id, placement) in enumerate(zip(image_ids, placements)):
        images.append({"id": image_id, "height": placement.height, "width": placement.width})
        for found in objects_of(index):
            rle, area, bbox = _mask_fields(found.mask)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(category_ids[found.label]),
                "segmentation": rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": int(found.crowd),
            })
    return InstanceFrame(
        ground_truth={"images": images, "annotations": annotations, "categories": categories},
        image_ids=image_ids,
        category_ids=tuple(category_ids),
        placements=placements,
    )


def _filled_annotation(annotation: dict, height: int, width: int) -> dict:
    """`annotation` with the fields pycocotools needs and the JSON may omit: iscrowd (0),
    and the area and bbox of its mask.

    Raises:
      coco_segmentation.Unusable: its segmentation cannot be decoded.
    """
    mask = coco_segmentation.decode_segmentation(annotation.get("segmentation"), height, width)
    filled = {"iscrowd": 0, **annotation}
    if "area" not in filled or "bbox" not in filled:
        _, area, bbox = _mask_fields(mask)
        filled.setdefault("area", area)
        filled.setdefault("bbox", bbox)
    return filled


def coco_json_frame(annotations_path: str, source, every_image: bool = False) -> InstanceFrame:
    """The frame of a COCO-format folder: its source images and its instances JSON.

    The ground truth holds the JSON's entries of the split's images (their sizes filled in
    from the images where the JSON omits them), its annotations of those images with a
    known category and a segmentation the dataset could decode (the others were skipped,
    with a warning, when it was built; fields pycocotools needs and the JSON omits are
    filled: `_filled_annotation`), and all of its categories.

    Args:
      annotations_path: the instances JSON the dataset was built from.
      source: a `pipeline.DecodedSource` of one of its splits.
      every_image: score every image of the JSON (the split is all of it), those the
        dataset could not read included, at the JSON's height and width; else only the
        split's examples.
    """
    coco = coco_json.read_coco_json(annotations_path)
    image_ids, placements = ids_and_placements(source)
    sizes = {image_id: (p.height, p.width) for image_id, p in zip(image_ids, placements)}
    if every_image:
        for entry in coco.images:
            listed = (entry.get("height"), entry.get("width"))
            if entry["id"] not in sizes and all(map(shapes.is_integer, listed)):
                sizes[entry["id"]] = listed
    images = [
        {**entry, "height": sizes[entry["id"]][0], "width": sizes[entry["id"]][1]}
        for entry in coco.images
        if entry["id"] in sizes
    ]
    annotations = []
    for annotation in coco.annotations:
        if (
            not isinstance(annotation, dict)
            or annotation.get("image_id") not in sizes
            or annotation.get("category_id") not in coco.labels
        ):
            continue
        try:
            annotations.append(_filled_annotation(annotation, *sizes[annotation["image_id"]]))
        except coco_segmentation.Unusable:
            continue
    by_label = sorted(coco.labels, key=coco.labels.get)
    return InstanceFrame(
        ground_truth={"images": images, "annotations": annotations, "categories": coco.categories},
        image_ids=image_ids,
        category_ids=(0, *by_label),
        placements=placements,
        scored_ids=tuple(image["id"] for image in images) if every_image else None,
    )
