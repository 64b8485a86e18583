"""Detection ops: boxes, anchors, NMS, RoI Align/Pool, matching, sampling, mask targets.

All ops work under `jax.jit` with static shapes and batch with `jax.vmap`, except the
numpy host paste (`paste_mask`, `paste_binary_mask`) for pasting detections at an
image's original resolution. Boxes are `(x1, y1, x2, y2)` in pixels; features are
channels-last.
"""
from jaxseg.ops.anchors import AnchorGenerator
from jaxseg.ops.boxes import BoxCoder, box_area, box_iou, clip_boxes, valid_box_mask
from jaxseg.ops.matching import match, match_boxes
from jaxseg.ops.nms import batched_nms, nms
from jaxseg.ops.sampling import sample_balanced
from jaxseg.ops.mask_targets import mask_targets, paste_masks
from jaxseg.ops.mask_paste_host import paste_binary_mask, paste_mask
from jaxseg.ops.roi_align import fpn_levels, multilevel_roi_align, roi_align
from jaxseg.ops.roi_pool import roi_pool
