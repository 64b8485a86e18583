"""Box geometry: areas, pairwise IoU, clipping, validity masks and the R-CNN box coder.

Boxes are `(x1, y1, x2, y2)` in pixels, float32, with width `x2 - x1` and height
`y2 - y1` (no "+1"). A box with `x2 <= x1` or `y2 <= y1` is degenerate: its area is 0
and its IoU with anything is 0.
"""
import dataclasses
import math

import jax.numpy as jnp


def check_boxes(boxes, name: str, rank: int | None = None):
    """Returns `boxes` as a float32 array after checking its last dimension is 4.

    `rank`, when given, is the exact number of dimensions required.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of 4 (x1, y1, x2, y2), got shape {boxes.shape}")
    if rank is not None and boxes.ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {boxes.shape}")
    return boxes


def box_area(boxes):
    """Areas of `boxes [..., 4]` float32 as `[...]` float32; degenerate boxes give 0."""
    boxes = check_boxes(boxes, "boxes")
    widths = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    heights = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return widths * heights


def box_iou(a, b):
    """Pairwise intersection-over-union of `a [N, 4]` and `b [M, 4]` as `[N, M]` float32.

    A pair whose union is empty (both boxes degenerate) has IoU 0, never NaN.
    """
    a = check_boxes(a, "a", rank=2)
    b = check_boxes(b, "b", rank=2)
    overlap_x = jnp.minimum(a[:, None, 2], b[None, :, 2]) - jnp.maximum(a[:, None, 0], b[None, :, 0])
    overlap_y = jnp.minimum(a[:, None, 3], b[None, :, 3]) - jnp.maximum(a[:, None, 1], b[None, :, 1])
    intersection = jnp.maximum(overlap_x, 0.0) * jnp.maximum(overlap_y, 0.0)
    union = box_area(a)[:, None] + box_area(b)[None, :] - intersection
    positive = union > 0.0
    return jnp.where(positive, intersection / jnp.where(positive, union, 1.0), 0.0)


def clip_boxes(boxes, height, width):
    """Clips `boxes [..., 4]` float32 to the image: x into `[0, width]`, y into `[0, height]`.

    `height` and `width` may be Python numbers or traced scalars.
    """
    boxes = check_boxes(boxes, "boxes")
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return jnp.stack(
        [jnp.clip(x1, 0.0, width), jnp.clip(y1, 0.0, height), jnp.clip(x2, 0.0, width), jnp.clip(y2, 0.0, height)],
        axis=-1,
    )


def valid_box_mask(boxes, min_size=0.0):
    """`[...]` bool mask of boxes `[..., 4]` whose width and height both exceed `min_size`.

    Degenerate or non-finite boxes are False; shapes never change, so callers mask instead
    of removing boxes.
    """
    boxes = check_boxes(boxes, "boxes")
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    finite = jnp.all(jnp.isfinite(boxes), axis=-1)
    return finite & (widths > min_size) & (heights > min_size)


def _centers_and_sizes(boxes):
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


@dataclasses.dataclass(frozen=True)
class BoxCoder:
    """The R-CNN box parametrization (dx, dy, dw, dh) relative to anchors or proposals.

    `dx = wx * (gx - ax) / aw`, `dy = wy * (gy - ay) / ah`, `dw = ww * log(gw / aw)`,
    `dh = wh * log(gh / ah)` with centers `(gx, gy)`, `(ax, ay)` and sizes `x2 - x1`,
    `y2 - y1`. Decoding clamps `dw / ww` and `dh / wh` at `scale_clamp` so huge predictions
    cannot overflow `exp`.
    """

    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    scale_clamp: float = math.log(1000.0 / 16)

    # The smallest size used for a box in `encode`, so zero-size boxes (e.g. padding) give
    # large finite deltas rather than -inf.
    min_encoded_size = 1e-6

    def __post_init__(self):
        if len(self.weights) != 4 or any(w <= 0 for w in self.weights):
            raise ValueError(f"weights must be four positive numbers, got {self.weights}")

    def encode(self, boxes, anchors):
        """Deltas `[..., 4]` float32 that turn `anchors [..., 4]` into `boxes [..., 4]`.

        The two inputs broadcast against each other. Anchors must have positive sizes;
        boxes of size 0 are treated as `min_encoded_size` wide/high.
        """
        boxes = check_boxes(boxes, "boxes")
        anchors = check_boxes(anchors, "anchors")
        anchor_x, anchor_y, anchor_w, anchor_h = _centers_and_sizes(anchors)
        box_x, box_y, box_w, box_h = _centers_and_sizes(boxes)
        box_w = jnp.maximum(box_w, self.min_encoded_size)
        box_h = jnp.maximum(box_h, self.min_encoded_size)
        wx, wy, ww, wh = self.weights
        return jnp.stack(
            [
                wx * (box_x - anchor_x) / anchor_w,
                wy * (box_y - anchor_y) / anchor_h,
                ww * jnp.log(box_w / anchor_w),
                wh * jnp.log(box_h / anchor_h),
            ],
            axis=-1,
        )

    def decode(self, deltas, anchors):
        """Boxes `[..., 4]` float32 from `deltas [..., 4]` applied to `anchors [..., 4]`.

        The two inputs broadcast against each other.
        """
        deltas = check_boxes(deltas, "deltas")
        anchors = check_boxes(anchors, "anchors")
        anchor_x, anchor_y, anchor_w, anchor_h = _centers_and_sizes(anchors)
        wx, wy, ww, wh = self.weights
        center_x = deltas[..., 0] / wx * anchor_w + anchor_x
        center_y = deltas[..., 1] / wy * anchor_h + anchor_y
        width = jnp.exp(jnp.minimum(deltas[..., 2] / ww, self.scale_clamp)) * anchor_w
        height = jnp.exp(jnp.minimum(deltas[..., 3] / wh, self.scale_clamp)) * anchor_h
        return jnp.stack(
            [center_x - 0.5 * width, center_y - 0.5 * height, center_x + 0.5 * width, center_y + 0.5 * height],
            axis=-1,
        )
