"""Mask R-CNN: stage shapes under jit, hand-computed targets, empty images, determinism."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.models.roi_heads import (
    BoxHead,
    MaskHead,
    detections,
    mask_training_targets,
    pool_features,
    roi_targets,
)
from jaxseg.models.rpn import RPNHead, propose, rpn_targets
from jaxseg.ops.flat_key import flat_key

IMAGE_SIZE = 64
SMALL_ANCHORS = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
TINY = dict(
    backbone="resnet18", backbone_width=8, fpn_channels=16, anchor_sizes=SMALL_ANCHORS,
    rpn_batch_size_per_image=32, rpn_pre_nms_topk_train=64, rpn_post_nms_topk_train=32,
    rpn_pre_nms_topk_test=64, rpn_post_nms_topk_test=32, roi_batch_size_per_image=32,
    box_head_dim=32, mask_head_channels=16, detections_per_image=10,
)
# Two objects in image 0 (boxes exactly covering their masks), none in image 1.
GT_BOXES = np.array([[[12, 12, 20, 20], [33, 17, 49, 35], [0, 0, 0, 0]], [[0, 0, 0, 0]] * 3], np.float32)
GT_LABELS = np.array([[1, 3, 0], [0, 0, 0]], np.int32)


def _masks(boxes):
    masks = np.zeros((*boxes.shape[:2], IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for image, image_boxes in enumerate(boxes.astype(int)):
        for slot, (x1, y1, x2, y2) in enumerate(image_boxes):
            masks[image, slot, y1:y2, x1:x2] = 1
    return masks


def _images(count, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((count, IMAGE_SIZE, IMAGE_SIZE, 3)), jnp.float32)


class Tiny:
    """A tiny model, its variables and jitted entry points, shared by the tests (one compile each)."""

    def __init__(self, variables=None, **overrides):
        self.model = MaskRCNN(**{**TINY, **overrides})
        self.variables = variables or jax.jit(
            lambda key, x: self.model.init(flat_key(key), x, method=MaskRCNN.detect))(jax.random.key(0), _images(2))

        def losses(params, images, boxes, labels, masks, valid, key):
            return self.model.apply({**self.variables, "params": params}, images, boxes, labels, masks, valid,
                                    method=MaskRCNN.losses, rngs={"sampling": key},
                                    mutable=["intermediates"])

        def total(*args):
            values, _ = losses(*args)
            return values["total"], values

        self.losses = jax.jit(losses)
        self.grads = jax.jit(jax.grad(total, has_aux=True))
        self.detect = jax.jit(lambda images: self.model.apply(self.variables, images, method=MaskRCNN.detect))

    def batch(self, boxes=GT_BOXES, labels=GT_LABELS):
        return (self.variables["params"], _images(len(boxes)), jnp.asarray(boxes), jnp.asarray(labels),
                jnp.asarray(_masks(boxes)), jnp.asarray(labels > 0))


@pytest.fixture(scope="module")
def tiny():
    return Tiny()


def _assert_finite_tree(tree):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf)))


LOSS_NAMES = {"rpn_objectness", "rpn_box", "box_classification", "box_regression", "mask", "total"}


def test_losses_are_finite_float32_scalars_and_sum_to_total(tiny):
    values, _ = tiny.losses(*tiny.batch(), jax.random.key(1))
    assert set(values) == LOSS_NAMES
    for name, value in values.items():
        assert value.shape == () and value.dtype == jnp.float32, name
        assert np.isfinite(value) and value >= 0.0, name
    parts = sum(float(values[name]) for name in LOSS_NAMES - {"total"})
    np.testing.assert_allclose(float(values["total"]), parts, rtol=1e-5)
    assert values["mask"] > 0.0 and values["box_regression"] > 0.0


def test_gradients_are_finite_with_an_empty_image_in_the_batch(tiny):
    grads, _ = tiny.grads(*tiny.batch(), jax.random.key(1))
    _assert_finite_tree(grads)
    assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(grads["mask_head"]))


def test_a_batch_without_objects_trains_without_nan(tiny):
    empty_boxes = np.zeros_like(GT_BOXES)
    empty_labels = np.zeros_like(GT_LABELS)
    values, _ = tiny.losses(*tiny.batch(empty_boxes, empty_labels), jax.random.key(1))
    grads, _ = tiny.grads(*tiny.batch(empty_boxes, empty_labels), jax.random.key(1))
    _assert_finite_tree(values)
    _assert_finite_tree(grads)
    for name in ("rpn_box", "box_regression", "mask"):
        assert float(values[name]) == 0.0, name
    assert values["rpn_objectness"] > 0.0 and values["box_classification"] > 0.0


def test_same_key_gives_same_losses_and_another_key_other_samples(tiny):
    first, _ = tiny.losses(*tiny.batch(), jax.random.key(7))
    again, _ = tiny.losses(*tiny.batch(), jax.random.key(7))
    _, other = tiny.losses(*tiny.batch(), jax.random.key(8))
    _, same = tiny.losses(*tiny.batch(), jax.random.key(7))
    for name in LOSS_NAMES:
        assert float(first[name]) == float(again[name])
    indices = same["intermediates"]["rpn_targets"][0].anchor_indices
    assert np.any(indices != other["intermediates"]["rpn_targets"][0].anchor_indices)


def test_each_image_draws_its_own_samples(tiny):
    """Two identical images with identical ground truth must not get identical samples."""
    boxes = np.repeat(GT_BOXES[:1], 2, axis=0)
    labels = np.repeat(GT_LABELS[:1], 2, axis=0)
    params, images, *ground_truth = tiny.batch(boxes, labels)
    images = jnp.repeat(images[:1], 2, axis=0)
    _, state = tiny.losses(params, images, *ground_truth, jax.random.key(3))
    anchors = state["intermediates"]["rpn_targets"][0].anchor_indices
    rois = state["intermediates"]["roi_targets"][0].boxes
    assert np.any(np.asarray(anchors[0]) != np.asarray(anchors[1]))
    assert np.any(np.asarray(rois[0]) != np.asarray(rois[1]))


def test_detect_shapes_dtypes_and_ranges(tiny):
    out = tiny.detect(_images(2))
    detections_per_image = TINY["detections_per_image"]
    expected = {
        "boxes": ((2, detections_per_image, 4), jnp.float32),
        "scores": ((2, detections_per_image), jnp.float32),
        "classes": ((2, detections_per_image), jnp.int32),
        "masks": ((2, detections_per_image, IMAGE_SIZE, IMAGE_SIZE), jnp.float32),
        "valid": ((2, detections_per_image), jnp.bool_),
    }
    assert {name: (value.shape, value.dtype) for name, value in out.items()} == expected
    valid = np.asarray(out["valid"])
    classes, scores, masks = (np.asarray(out[name]) for name in ("classes", "scores", "masks"))
    assert np.all((classes[valid] >= 1) & (classes[valid] <= 3))
    assert np.all(scores[valid] > tiny.model.score_threshold)
    assert np.all(masks[~valid] == 0.0) and np.all((masks >= 0.0) & (masks <= 1.0))
    boxes = np.asarray(out["boxes"])[valid]
    assert np.all((boxes >= 0.0) & (boxes <= IMAGE_SIZE))
    sorted_scores = np.where(valid, scores, -1.0)
    assert np.all(np.diff(sorted_scores, axis=1) <= 0.0)


def test_roi_pool_extractor_trains(tiny):
    model = Tiny(tiny.variables, roi_extractor="roi_pool")
    grads, values = model.grads(*model.batch(), jax.random.key(1))
    _assert_finite_tree(values)
    _assert_finite_tree(grads)
    assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(grads["box_head"]))


def test_bad_inputs_raise_value_errors(tiny):
    params, images, boxes, labels, masks, valid = tiny.batch()
    apply = tiny.model.apply
    variables = tiny.variables
    rngs = {"sampling": jax.random.key(0)}
    with pytest.raises(ValueError, match="images"):
        apply(variables, images[:, :60], method=MaskRCNN.detect)
    with pytest.raises(ValueError, match="images"):
        apply(variables, images[0], method=MaskRCNN.detect)
    with pytest.raises(ValueError, match="gt_masks"):
        apply(variables, images, boxes, labels, masks[:, :, :32], valid, method=MaskRCNN.losses, rngs=rngs)
    with pytest.raises(ValueError, match="gt_boxes"):
        apply(variables, images, boxes[:, :0], labels[:, :0], masks[:, :0], valid[:, :0],
              method=MaskRCNN.losses, rngs=rngs)
    with pytest.raises(ValueError, match="roi_extractor"):
        MaskRCNN(**{**TINY, "roi_extractor": "roi_warp"}).init(flat_key(jax.random.key(0)), images,
                                                                 method=MaskRCNN.detect)
    with pytest.raises(ValueError, match="anchor_sizes"):
        MaskRCNN(**{**TINY, "anchor_sizes": SMALL_ANCHORS[:4]}).init(flat_key(jax.random.key(0)), images,
                                                                     method=MaskRCNN.detect)


# ----------------------------------------------------------------- stages under jit


def test_every_stage_has_static_shapes_under_jit_for_batch_2(tiny):
    model = tiny.model
    generator = model.anchor_generator()
    anchors = generator(IMAGE_SIZE, IMAGE_SIZE)
    num_anchors = anchors.shape[0]
    counts = generator.num_anchors_per_level(IMAGE_SIZE, IMAGE_SIZE)
    channels = TINY["fpn_channels"]
    pyramid = [jnp.ones((2, IMAGE_SIZE // 2**level, IMAGE_SIZE // 2**level, channels)) for level in range(2, 7)]
    head = RPNHead(num_anchors=3)
    head_variables = head.init(flat_key(jax.random.key(0)), pyramid)
    objectness, deltas = jax.jit(head.apply)(head_variables, pyramid)
    assert (objectness.shape, deltas.shape) == ((2, num_anchors), (2, num_anchors, 4))

    proposals, proposal_valid = jax.jit(jax.vmap(lambda o, d: propose(
        o, d, anchors, counts, (IMAGE_SIZE, IMAGE_SIZE), pre_nms_topk=64, post_nms_topk=32,
        nms_threshold=0.7)))(objectness, deltas)
    assert proposals.shape == (2, 32, 4) and proposals.dtype == jnp.float32
    assert proposal_valid.shape == (2, 32) and proposal_valid.dtype == jnp.bool_

    keys = jax.random.split(jax.random.key(0), 2)
    gt_boxes, gt_labels, gt_valid = jnp.asarray(GT_BOXES), jnp.asarray(GT_LABELS), jnp.asarray(GT_LABELS > 0)
    anchor_samples = jax.jit(jax.vmap(lambda b, v, k: rpn_targets(
        anchors, b, v, k, batch_size=32, positive_fraction=0.5, fg_iou_threshold=0.7,
        bg_iou_threshold=0.3)))(gt_boxes, gt_valid, keys)
    assert anchor_samples.anchor_indices.shape == (2, 32) and anchor_samples.box_targets.shape == (2, 32, 4)

    rois = jax.jit(jax.vmap(lambda p, pv, b, l, v, k: roi_targets(
        p, pv, b, l, v, k, batch_size=16, positive_fraction=0.25, iou_threshold=0.5)))(
        proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, keys)
    assert rois.boxes.shape == (2, 16, 4) and rois.classes.dtype == jnp.int32 and rois.valid.shape == (2, 16)

    mask_boxes, mask_classes, targets, foreground = jax.jit(jax.vmap(
        lambda r, m: mask_training_targets(r, m, 4, 28)))(rois, jnp.asarray(_masks(GT_BOXES)))
    assert targets.shape == (2, 4, 28, 28) and foreground.shape == (2, 4) and mask_boxes.shape == (2, 4, 4)

    pooled = jax.jit(jax.vmap(lambda maps, boxes: pool_features(maps, boxes, 7, "roi_align", 2)))(
        pyramid[:4], rois.boxes)
    assert pooled.shape == (2, 16, 7, 7, channels)
    box_head = BoxHead(num_classes=4, fc_dim=32)
    logits, box_deltas = jax.jit(box_head.apply)(box_head.init(flat_key(jax.random.key(0)), pooled[0]), pooled[0])
    assert logits.shape == (16, 4) and box_deltas.shape == (16, 3, 4)
    mask_head = MaskHead(num_classes=4, channels=8)
    mask_input = jnp.ones((5, 14, 14, channels))
    mask_logits = jax.jit(mask_head.apply)(mask_head.init(flat_key(jax.random.key(0)), mask_input), mask_input)
    assert mask_logits.shape == (5, 28, 28, 3) and mask_logits.dtype == jnp.float32

    final = jax.jit(lambda l, d, p, v: detections(l, d, p, v, (IMAGE_SIZE, IMAGE_SIZE), score_threshold=0.05,
                                                   nms_threshold=0.5, max_detections=10))(
        logits, box_deltas, rois.boxes[0], rois.valid[0])
    assert [x.shape for x in final] == [(10, 4), (10,), (10,), (10,)]


def test_roi_losses_do_not_reach_the_rpn_head_through_proposals(tiny):
    params, *batch = tiny.batch()

    def roi_losses(rpn_params):
        values, _ = tiny.losses({**params, "rpn_head": rpn_params}, *batch, jax.random.key(1))
        return values["box_classification"] + values["box_regression"] + values["mask"]

    grads = jax.jit(jax.grad(roi_losses))(params["rpn_head"])
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.asarray(leaf) == 0.0)
    rpn_grads, _ = tiny.grads(params, *batch, jax.random.key(1))
    assert any(np.any(np.asarray(leaf) != 0.0) for leaf in jax.tree.leaves(rpn_grads["rpn_head"]))


def test_batch_norm_backbone_updates_its_statistics_while_training():
    model = MaskRCNN(**{**TINY, "backbone_norm": "batch"})
    images = _images(2)
    variables = jax.jit(lambda key: model.init(flat_key(key), images, method=MaskRCNN.detect))(jax.random.key(0))
    ground_truth = [jnp.asarray(x) for x in (GT_BOXES, GT_LABELS, _masks(GT_BOXES), GT_LABELS > 0)]
    values, state = jax.jit(lambda v, key: model.apply(v, images, *ground_truth, method=MaskRCNN.losses,
                                                       rngs={"sampling": key}, mutable=["batch_stats"]))(
        variables, jax.random.key(1))
    _assert_finite_tree(values)
    old_means = jax.tree.leaves(variables["batch_stats"])
    new_means = jax.tree.leaves(state["batch_stats"])
    assert any(np.any(np.asarray(old) != np.asarray(new)) for old, new in zip(old_means, new_means))
