"""Panoptic FPN's parts: fusion (hand-built cases), the ground-truth maps, the panoptic
shapes data, the semantic head's structure and upsampling, the loss and the config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import config_validation
from jaxseg.config_files import load_config_file
from jaxseg.data import panoptic_shapes, pipeline, shapes
from jaxseg.errors import ConfigError
from jaxseg.models.panoptic_fpn import PanopticFPN, upsample_bilinear
from jaxseg.ops.flat_key import flat_key
from jaxseg.ops.panoptic_fusion import fuse_panoptic
from jaxseg.evaluation.panoptic_frames import canvas_categories, example_ground_truth

FUSION = dict(score_threshold=0.5, overlap_threshold=0.5, stuff_area_limit=3)


def box_mask(shape, rows, columns):
    mask = np.zeros(shape, bool)
    mask[rows, columns] = True
    return mask


def test_fusion_places_instances_by_score_then_stuff_on_free_pixels():
    """8 x 8. Instance A (score 0.9, class 1): rows 0-3, columns 0-3 (16 px). Instance B
    (0.8, class 2): rows 2-5, columns 2-5, 4 of its 16 px on A: it takes its 12 free ones.
    Instance C (0.7): rows 0-1, columns 0-3, all on A: skipped. Instance D (0.4): below the
    threshold. An invalid slot with score 0.99 is ignored. Semantic: stuff 1 on rows 0-6,
    stuff 2 on row 7 but for 3 pixels of the thing label 0 (VOID), stuff 3 on 2 pixels (under
    the area limit of 3: dropped, VOID)."""
    shape = (8, 8)
    masks = np.stack([
        box_mask(shape, slice(0, 4), slice(0, 4)),
        box_mask(shape, slice(2, 6), slice(2, 6)),
        box_mask(shape, slice(0, 2), slice(0, 4)),
        box_mask(shape, slice(6, 8), slice(6, 8)),
        box_mask(shape, slice(0, 8), slice(0, 8)),
    ])
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.99])
    classes = np.array([1, 2, 1, 3, 1])
    valid = np.array([True, True, True, True, False])
    semantic = np.ones(shape, np.int64)
    semantic[7] = 2
    semantic[7, :3] = 0
    semantic[5, 6:8] = 3
    ids, segments = fuse_panoptic(masks, scores, classes, valid, semantic, **FUSION)
    assert [(s["isthing"], s["label"], s["area"]) for s in segments] == [
        (True, 1, 16), (True, 2, 12), (False, 1, 64 - 16 - 12 - 8 - 2), (False, 2, 5)]
    expected = np.full(shape, 3)
    expected[7] = 4
    expected[7, :3] = 0
    expected[5, 6:8] = 0
    expected[2:6, 2:6] = 2
    expected[0:4, 0:4] = 1
    np.testing.assert_array_equal(ids, expected)
    assert segments[0]["score"] == 0.9


def test_fusion_with_nothing_detected_is_stuff_and_void():
    semantic = np.zeros((4, 4), np.int64)
    semantic[:2] = 2
    ids, segments = fuse_panoptic(np.zeros((3, 4, 4), bool), np.zeros(3), np.ones(3, int), np.zeros(3, bool),
                                  semantic, **FUSION)
    assert segments == [{"id": 1, "isthing": False, "label": 2, "area": 8}]
    assert (ids[2:] == 0).all() and (ids[:2] == 1).all()


def test_ground_truth_map_of_an_example():
    semantic = np.array([[1, 1, 0, 0], [2, 2, 0, 255], [2, 2, 0, 0]])
    masks = np.zeros((2, 3, 4), np.uint8)
    masks[0, 0:2, 2] = 1
    masks[1, 2, 2:4] = 1
    masks[1, 0, 3] = 1
    ids, segments = example_ground_truth({"semantic": semantic, "masks": masks, "labels": np.array([3, 1])}, 255)
    np.testing.assert_array_equal(ids, [[1, 1, 3, 4], [2, 2, 3, 0], [2, 2, 4, 4]])
    assert [(s["isthing"], s["label"], s["area"]) for s in segments] == [
        (False, 1, 2), (False, 2, 4), (True, 3, 2), (True, 1, 3)]


def test_categories_number_things_then_stuff():
    categories = canvas_categories(("background", "circle", "square"), ("thing", "sky", "sand"))
    assert [(c["id"], c["name"], c["isthing"]) for c in categories] == [
        (1, "circle", 1), (2, "square", 1), (3, "sky", 0), (4, "sand", 0)]


def test_panoptic_shapes_label_every_pixel_once():
    config = shapes.shapes_config(image_size=64)
    classes_seen = set()
    for index in range(12):
        example = panoptic_shapes.generate_example(config, "train", index)
        semantic, instance_ids = example["semantic"], example["instance_ids"]
        np.testing.assert_array_equal(semantic == 0, instance_ids > 0)
        assert semantic.max() <= 3 and example["image"].shape == (64, 64, 3)
        classes_seen |= set(np.unique(semantic).tolist())
        again = panoptic_shapes.generate_example(config, "train", index)
        for name in example:
            np.testing.assert_array_equal(example[name], again[name])
    assert classes_seen == {0, 1, 2, 3}


def test_panoptic_shapes_split_stores_the_generated_examples(tmp_path):
    data = load_config_file("configs/panoptic_shapes.py").data
    data.data_dir = str(tmp_path)
    data.image_size, data.num_train, data.num_validation, data.num_test = 32, 3, 2, 1
    source = pipeline.load_split(data, "validation")
    config = shapes.shapes_config(image_size=32, num_train=3, num_validation=2, num_test=1)
    for index in range(2):
        expected = panoptic_shapes.generate_example(config, "validation", index)
        stored = source[index]
        np.testing.assert_array_equal(stored["semantic"], expected["semantic"])
        np.testing.assert_array_equal(stored["image"], expected["image"])
        np.testing.assert_array_equal(stored["labels"], expected["labels"])


def reference_bilinear(x: np.ndarray, factor: int) -> np.ndarray:
    """PyTorch's bilinear upsampling with align_corners=False, from its definition: output
    pixel i samples the input at (i + 0.5) / factor - 0.5, clamped at 0, edges replicated."""
    def weights(size):
        source = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, None)
        low = np.minimum(np.floor(source).astype(int), size - 1)
        high = np.minimum(low + 1, size - 1)
        frac = source - low
        matrix = np.zeros((size * factor, size))
        matrix[np.arange(size * factor), low] += 1 - frac
        matrix[np.arange(size * factor), high] += frac
        return matrix

    rows, columns = weights(x.shape[1]), weights(x.shape[2])
    return np.einsum("ih,nhwc,jw->nijc", rows, x, columns)


@pytest.mark.parametrize("factor", [2, 4])
def test_upsampling_is_pytorch_bilinear_without_aligned_corners(factor):
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(upsample_bilinear(jnp.asarray(x), factor), reference_bilinear(x, factor), atol=1e-5)


def tiny_model(**fields):
    return PanopticFPN(num_classes=4, num_stuff_classes=4, backbone="resnet18", backbone_width=8, fpn_channels=16,
                       semantic_channels=8, box_head_dim=16, mask_head_channels=8, mask_head_convs=1,
                       rpn_batch_size_per_image=16, roi_batch_size_per_image=16, mask_rois_per_image=2,
                       rpn_pre_nms_topk_train=20, rpn_post_nms_topk_train=20, rpn_pre_nms_topk_test=20,
                       rpn_post_nms_topk_test=20, detections_per_image=5,
                       anchor_sizes=((8.0,), (16.0,), (32.0,), (64.0,), (128.0,)), **fields)


def test_semantic_head_stages_follow_detectron2_and_the_loss_adds_weighted():
    """P2, P3: one stage each; P4: two; P5: three. total = Mask R-CNN's five losses +
    weight x semantic, and `semantic` is the mean cross-entropy of the non-ignored pixels."""
    images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 64, 64, 3)), jnp.float32)
    model = tiny_model(semantic_loss_weight=0.25)
    variables = jax.jit(lambda key: model.init(flat_key(key), images, method=PanopticFPN.detect))(jax.random.key(0))
    head = variables["params"]["semantic_head"]
    assert sorted(name for name in head if not name.endswith("norm")) == [
        "p2_stage0", "p3_stage0", "p4_stage0", "p4_stage1", "p5_stage0", "p5_stage1", "p5_stage2", "predictor"]
    boxes = jnp.array([[[4, 4, 20, 20]], [[10, 10, 40, 30]]], jnp.float32)
    masks = jnp.zeros((2, 1, 64, 64)).at[0, 0, 4:20, 4:20].set(1).at[1, 0, 10:30, 10:40].set(1)
    semantic = jnp.asarray(np.random.default_rng(2).integers(0, 4, (2, 64, 64))).at[:, :8].set(255)
    losses = jax.jit(lambda v: model.apply(v, images, boxes, jnp.array([[1], [2]]), masks, jnp.ones((2, 1), bool), semantic,
                         method=PanopticFPN.losses, rngs={"sampling": jax.random.key(3)}))(variables)
    instance = sum(losses[name] for name in ("rpn_objectness", "rpn_box", "box_classification", "box_regression", "mask"))
    np.testing.assert_allclose(losses["total"], instance + 0.25 * losses["semantic"], rtol=1e-6)

    def semantic_logits(module, x):
        return module._semantic_logits(module._features(x, False))

    logits = np.asarray(jax.jit(lambda v: model.apply(v, images, method=semantic_logits))(variables), np.float64)
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    labels = np.asarray(semantic)
    kept = labels != 255
    expected = -np.take_along_axis(log_p, np.where(kept, labels, 0)[..., None], -1)[..., 0][kept].mean()
    np.testing.assert_allclose(losses["semantic"], expected, rtol=1e-5)
    detections = jax.jit(lambda v: model.apply(v, images, method=PanopticFPN.detect, paste=False))(variables)
    np.testing.assert_array_equal(detections["semantic"], logits.argmax(-1))


def test_config_errors_name_the_field():
    config = load_config_file("configs/panoptic_shapes.py")
    config_validation.validate_config(config)
    config.data.stuff_class_names = ("thing", "sky")
    with pytest.raises(ConfigError, match=r"config.data.stuff_class_names=\('thing', 'sky'\) must be"):
        config_validation.validate_config(config)
    config = load_config_file("configs/panoptic_shapes.py")
    config.model.semantic_norm = "batch"
    with pytest.raises(ConfigError, match=r"config.model.semantic_norm"):
        config_validation.validate_config(config)
    config = load_config_file("configs/panoptic_shapes.py")
    config.model.ignore_label = 0
    with pytest.raises(ConfigError, match=r"config.data.ignore_label=255 must equal config.model.ignore_label=0"):
        config_validation.validate_config(config)
