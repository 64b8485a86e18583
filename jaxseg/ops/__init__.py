"""Detection ops: boxes, anchors, NMS, RoI Align/Pool, matching, sampling, mask targets.

All ops work under `jax.jit` with static shapes and batch with `jax.vmap`.
Boxes are `(x1, y1, x2, y2)` in pixels; features are channels-last.
"""
