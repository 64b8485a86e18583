"""Mask R-CNN overfits 4 fixed shapes images: its COCO mask AP on them exceeds 0.9."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.data import shapes
from jaxseg.evaluation.coco import COCOEvaluator, ground_truth_to_coco
from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.ops.flat_key import flat_key

SIZE = 64
MAX_INSTANCES = 3
MAX_STEPS = 400
CHECK_EVERY = 50
TARGET_MASK_AP = 0.9


def _examples():
    config = shapes.shapes_config(image_size=SIZE, min_shapes=1, max_shapes=MAX_INSTANCES, empty_fraction=0.0)
    examples = []
    for index in range(4):
        example = shapes.generate_example(config, "train", index)
        count = len(example["labels"])
        example["masks"] = (example["instance_ids"][None] == np.arange(1, count + 1)[:, None, None]).astype(np.uint8)
        examples.append(example)
    return examples


def _padded_batch(examples):
    boxes = np.zeros((len(examples), MAX_INSTANCES, 4), np.float32)
    labels = np.zeros((len(examples), MAX_INSTANCES), np.int32)
    masks = np.zeros((len(examples), MAX_INSTANCES, SIZE, SIZE), np.uint8)
    for index, example in enumerate(examples):
        count = len(example["labels"])
        boxes[index, :count], labels[index, :count], masks[index, :count] = (
            example["boxes"], example["labels"], example["masks"])
    images = np.stack([example["image"] for example in examples]).astype(np.float32) / 255.0
    return tuple(jnp.asarray(x) for x in (images, boxes, labels, masks, labels > 0))


@pytest.mark.slow
def test_overfits_four_images_to_mask_ap_above_0_9():
    examples = _examples()
    assert all(len(example["labels"]) >= 1 for example in examples)
    images, boxes, labels, masks, valid = _padded_batch(examples)
    model = MaskRCNN(
        backbone="resnet18", backbone_width=16, fpn_channels=32,
        anchor_sizes=((8.0,), (16.0,), (32.0,), (64.0,), (128.0,)),
        rpn_batch_size_per_image=64, rpn_pre_nms_topk_train=200, rpn_post_nms_topk_train=100,
        rpn_pre_nms_topk_test=200, rpn_post_nms_topk_test=50, roi_batch_size_per_image=64,
        box_head_dim=128, mask_head_channels=32,
    )
    variables = jax.jit(lambda key: model.init(flat_key(key), images, method=MaskRCNN.detect))(jax.random.key(0))
    fixed = {name: value for name, value in variables.items() if name != "params"}
    optimizer = optax.adam(1e-3)

    @jax.jit
    def train_step(params, opt_state, key):
        def total_loss(p):
            losses = model.apply({**fixed, "params": p}, images, boxes, labels, masks, valid,
                                 method=MaskRCNN.losses, rngs={"sampling": key})
            return losses["total"], losses

        grads, losses = jax.grad(total_loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, losses

    detect = jax.jit(lambda params: model.apply({**fixed, "params": params}, images, method=MaskRCNN.detect))
    ground_truth = ground_truth_to_coco(examples, shapes.CLASS_NAMES)

    def mask_ap(params):
        out = jax.device_get(detect(params))
        evaluator = COCOEvaluator(ground_truth)
        for index in range(len(examples)):
            binary = (out["masks"][index] >= model.mask_threshold).astype(np.uint8)
            evaluator.add(index, out["boxes"][index], out["scores"][index], out["classes"][index],
                          masks=binary, valid=out["valid"][index])
        return evaluator.evaluate()["mask_ap"]

    params, opt_state = variables["params"], optimizer.init(variables["params"])
    key = jax.random.key(1)
    start, ap = time.time(), 0.0
    for step in range(1, MAX_STEPS + 1):
        key, step_key = jax.random.split(key)
        params, opt_state, losses = train_step(params, opt_state, step_key)
        assert np.isfinite(float(losses["total"])), step
        if step % CHECK_EVERY == 0:
            ap = mask_ap(params)
            if ap > TARGET_MASK_AP:
                break
    print(f"overfit: mask AP {ap:.3f} after {step} steps, {time.time() - start:.0f} s")
    assert ap > TARGET_MASK_AP
