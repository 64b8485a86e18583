"""Image extents in Mask R-CNN (clipping to each image's own size) and the numpy host paste."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.mask_rcnn import MASK_SIZE, MaskRCNN
from jaxseg.models.rpn import propose
from jaxseg.ops import paste_binary_mask, paste_mask, paste_masks
from jaxseg.ops.flat_key import flat_key
from jaxseg.ops.mask_paste_host import _touched
from tests.test_mask_rcnn import GT_BOXES, GT_LABELS, IMAGE_SIZE, TINY, _images, _masks
from tests.test_mask_targets import paste_reference

# (height, width) per image: image 0 holds GT_BOXES' objects (x2 <= 49, y2 <= 35), image 1 none.
EXTENTS = np.array([[40, 56], [48, 24]], np.int32)
FULL = np.full((2, 2), IMAGE_SIZE, np.int32)

# ----------------------------------------------------------------- host paste

HEIGHT, WIDTH = 37, 50
PASTE_BOXES = {
    "inside": [3.0, 2.0, 31.5, 20.25],
    "partly_outside": [-7.5, 25.0, 12.0, 49.0],
    "past_bottom_right": [40.2, 30.1, 61.0, 44.0],
    "sub_pixel": [10.3, 11.6, 10.9, 12.1],
    "large": [-20.0, -15.0, 80.0, 60.0],
    "outside": [55.0, 3.0, 70.0, 9.0],
    "zero_width": [8.0, 4.0, 8.0, 20.0],
    "zero_width_on_pixel_centre": [8.5, 4.0, 8.5, 20.0],
    "zero_height_on_pixel_centre": [4.0, 9.5, 20.0, 9.5],
}


@pytest.mark.parametrize("mask_size", [MASK_SIZE, 5])
@pytest.mark.parametrize("name", sorted(PASTE_BOXES))
def test_host_paste_equals_device_paste(name, mask_size):
    box = np.array(PASTE_BOXES[name], np.float64)
    probabilities = np.random.default_rng(mask_size).uniform(size=(mask_size, mask_size)).astype(np.float32)
    want = np.asarray(paste_masks(probabilities[None], box[None], HEIGHT, WIDTH))[0]
    got = paste_mask(probabilities, box, HEIGHT, WIDTH)
    assert got.shape == (HEIGHT, WIDTH) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    if box[2] > box[0] and box[3] > box[1]:
        np.testing.assert_allclose(got, paste_reference(probabilities, box, HEIGHT, WIDTH), atol=1e-5)
    else:
        assert np.all(got == 0.0) and np.all(want == 0.0)


def test_host_paste_computes_a_small_range_holding_every_nonzero_pixel():
    box = np.array([100.25, 700.5, 110.75, 709.0])
    rows, cols = _touched(box[1], box[3], MASK_SIZE, 1024), _touched(box[0], box[2], MASK_SIZE, 1024)
    assert rows[1] - rows[0] <= 9 + 4 and cols[1] - cols[0] <= 11 + 4
    pasted = np.asarray(paste_masks(np.ones((1, MASK_SIZE, MASK_SIZE)), box[None], 1024, 1024))[0]
    nonzero_rows, nonzero_cols = np.nonzero(pasted)
    assert rows[0] < nonzero_rows.min() and nonzero_rows.max() < rows[1] - 1
    assert cols[0] < nonzero_cols.min() and nonzero_cols.max() < cols[1] - 1


def test_paste_binary_mask_by_hand():
    got = paste_binary_mask(np.ones((4, 4), np.float32), (2.0, 2.0, 6.0, 6.0), 8, 9, threshold=0.5)
    want = np.zeros((8, 9), bool)
    want[2:6, 2:6] = True
    assert got.dtype == bool
    np.testing.assert_array_equal(got, want)
    half = paste_binary_mask(np.full((4, 4), 0.5, np.float32), (2.0, 2.0, 6.0, 6.0), 8, 9, threshold=0.5)
    np.testing.assert_array_equal(half, want)


def test_paste_binary_mask_into_a_column_major_buffer():
    rng = np.random.default_rng(3)
    probabilities = rng.uniform(0, 1, (MASK_SIZE, MASK_SIZE)).astype(np.float32)
    for box in ((3.2, 1.5, 40.7, 22.1), (-5.0, 10.0, 12.0, 60.0), (50.0, 30.0, 50.0, 40.0)):
        buffer = np.zeros((30, 45, 1), np.uint8, order="F")
        written = paste_binary_mask(probabilities, box, 30, 45, 0.4, out=buffer[..., 0])
        want = paste_mask(probabilities, box, 30, 45) >= 0.4
        np.testing.assert_array_equal(buffer[..., 0], want)
        assert np.shares_memory(written, buffer)
    with pytest.raises(ValueError, match="out must have shape"):
        paste_binary_mask(probabilities, (0, 0, 5, 5), 30, 45, out=np.zeros((45, 30), bool))


def test_host_paste_rejects_bad_inputs():
    ones = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="probabilities"):
        paste_mask(ones[:3], (0, 0, 2, 2), 5, 5)
    with pytest.raises(ValueError, match="box"):
        paste_mask(ones, (0, 0, 2), 5, 5)
    with pytest.raises(ValueError, match="box"):
        paste_mask(ones, (0, 0, np.nan, 2), 5, 5)
    with pytest.raises(ValueError, match="width"):
        paste_mask(ones, (0, 0, 2, 2), 5, 0)


# ----------------------------------------------------------------- proposals


def test_propose_clips_to_a_traced_extent_per_image():
    generator = MaskRCNN(**TINY).anchor_generator()
    anchors = generator(IMAGE_SIZE, IMAGE_SIZE)
    counts = generator.num_anchors_per_level(IMAGE_SIZE, IMAGE_SIZE)
    rng = np.random.default_rng(0)
    objectness = jnp.asarray(rng.normal(size=(2, len(anchors))), jnp.float32)
    deltas = jnp.asarray(rng.normal(0.0, 0.5, size=(2, len(anchors), 4)), jnp.float32)

    def run(extents):
        return jax.vmap(lambda o, d, hw: propose(o, d, anchors, counts, hw, pre_nms_topk=64, post_nms_topk=32,
                                                 nms_threshold=0.7))(objectness, deltas, extents)

    boxes, valid = (np.asarray(x) for x in jax.jit(run)(jnp.asarray(EXTENTS, jnp.float32)))
    for image, (height, width) in enumerate(EXTENTS):
        inside = boxes[image][valid[image]]
        assert len(inside) > 0
        assert np.all(inside >= 0.0) and np.all(inside[:, 2] <= width) and np.all(inside[:, 3] <= height)
        static_boxes, static_valid = propose(objectness[image], deltas[image], anchors, counts,
                                             (int(height), int(width)), pre_nms_topk=64, post_nms_topk=32,
                                             nms_threshold=0.7)
        np.testing.assert_allclose(boxes[image], static_boxes, atol=1e-5)  # eager vs jit: ulps apart
        np.testing.assert_array_equal(valid[image], static_valid)
    full_boxes, full_valid = (np.asarray(x) for x in jax.jit(run)(jnp.asarray(FULL, jnp.float32)))
    assert np.any(full_boxes[1][full_valid[1]][:, 2] > EXTENTS[1, 1])


# ----------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def tiny():
    # More detection slots than the 32 proposals x 3 classes can fill: every image has invalid slots.
    model = MaskRCNN(**{**TINY, "detections_per_image": 100})
    variables = jax.jit(lambda key, x: model.init(flat_key(key), x, method=MaskRCNN.detect))(jax.random.key(0), _images(2))

    @functools.partial(jax.jit, static_argnames="paste")
    def detect(images, image_hw, paste=True):
        return model.apply(variables, images, image_hw, paste=paste, method=MaskRCNN.detect)

    @jax.jit
    def roi_targets(image_hw):
        ground_truth = [jnp.asarray(x) for x in (GT_BOXES, GT_LABELS, _masks(GT_BOXES), GT_LABELS > 0)]
        _, state = model.apply(variables, _images(2), *ground_truth, image_hw=image_hw, method=MaskRCNN.losses,
                               rngs={"sampling": jax.random.key(1)}, mutable=["intermediates"])
        return state["intermediates"]["roi_targets"][0]

    return model, variables, detect, roi_targets


def _assert_inside(boxes, valid, extents):
    for image, (height, width) in enumerate(extents):
        inside = np.asarray(boxes)[image][np.asarray(valid)[image]]
        assert len(inside) > 0
        assert np.all(inside >= 0.0) and np.all(inside[:, 2] <= width) and np.all(inside[:, 3] <= height)


def test_detect_without_extents_equals_detect_with_the_full_canvas(tiny):
    _, _, detect, _ = tiny
    without = detect(_images(2), None)
    full = detect(_images(2), jnp.asarray(FULL))
    assert set(without) == set(full) == {"boxes", "scores", "classes", "masks", "valid"}
    for name in without:
        np.testing.assert_array_equal(np.asarray(without[name]), np.asarray(full[name]), err_msg=name)


def test_detection_boxes_lie_inside_each_images_extent(tiny):
    _, _, detect, _ = tiny
    clipped = detect(_images(2), jnp.asarray(EXTENTS))
    _assert_inside(clipped["boxes"], clipped["valid"], EXTENTS)
    full = detect(_images(2), jnp.asarray(FULL))
    full_boxes = np.asarray(full["boxes"])[np.asarray(full["valid"])]
    assert np.any(full_boxes[:, 2] > EXTENTS[:, 1].min()) and np.any(full_boxes[:, 3] > EXTENTS[:, 0].min())
    image0 = np.asarray(clipped["boxes"])[0][np.asarray(clipped["valid"])[0]]
    assert np.any(image0[:, 2] > EXTENTS[1, 1])  # image 0 is clipped to its own width, not the batch's least


def test_training_rois_lie_inside_each_images_extent(tiny):
    _, _, _, roi_targets = tiny
    rois = roi_targets(jnp.asarray(EXTENTS))
    _assert_inside(rois.boxes, rois.valid, EXTENTS)
    full = roi_targets(jnp.asarray(FULL))
    full_boxes = np.asarray(full.boxes)[np.asarray(full.valid)]
    assert np.any(full_boxes[:, 2] > EXTENTS[:, 1].min())


def test_mask_probabilities_pasted_on_the_host_equal_the_device_masks(tiny):
    model, _, detect, _ = tiny
    pasted = detect(_images(2), jnp.asarray(EXTENTS))
    compact = detect(_images(2), jnp.asarray(EXTENTS), paste=False)
    assert set(compact) == {"boxes", "scores", "classes", "mask_probabilities", "valid"}
    for name in ("boxes", "scores", "classes", "valid"):
        np.testing.assert_array_equal(np.asarray(compact[name]), np.asarray(pasted[name]), err_msg=name)
    probabilities = np.asarray(compact["mask_probabilities"])
    shape = (2, model.detections_per_image, MASK_SIZE, MASK_SIZE)
    assert probabilities.shape == shape and probabilities.dtype == np.float32
    valid, boxes, masks = (np.asarray(pasted[name]) for name in ("valid", "boxes", "masks"))
    assert np.all(np.any(~valid, axis=1)) and np.all(masks[~valid] == 0.0)
    assert np.all(probabilities[~valid] == 0.0) and np.all((probabilities >= 0.0) & (probabilities <= 1.0))
    assert np.any(probabilities[valid] > 0.0)
    for image, slot in zip(*np.nonzero(valid)):
        host = paste_mask(probabilities[image, slot], boxes[image, slot].astype(np.float64), IMAGE_SIZE,
                          IMAGE_SIZE)
        np.testing.assert_allclose(host, masks[image, slot], atol=1e-5, rtol=0)


@pytest.mark.parametrize("image_hw", [np.array([40, 56], np.int32), np.zeros((2, 3), np.int32),
                                      np.zeros((1, 2), np.int32), np.zeros((2, 2, 1), np.int32),
                                      np.zeros((2, 2), np.float32)])
def test_bad_image_hw_raises_value_error(tiny, image_hw):
    model, variables, _, _ = tiny
    images = _images(2)
    with pytest.raises(ValueError, match="image_hw"):
        model.apply(variables, images, image_hw, method=MaskRCNN.detect)
    ground_truth = [jnp.asarray(x) for x in (GT_BOXES, GT_LABELS, _masks(GT_BOXES), GT_LABELS > 0)]
    with pytest.raises(ValueError, match="image_hw"):
        model.apply(variables, images, *ground_truth, image_hw=image_hw, method=MaskRCNN.losses,
                    rngs={"sampling": jax.random.key(0)})
