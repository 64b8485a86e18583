"""Config files, validation errors naming the field, and the command line's handling of typos."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from jaxseg import config_files
from jaxseg.config_validation import ConfigError, validate_config
from jaxseg.data.sources import catalog as catalog_source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")


def load_config_file(name: str) -> ml_collections.ConfigDict:
    return config_files.load_config_file(os.path.join(CONFIG_DIR, name))


SHIPPED_CONFIGS = sorted(
    f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_")
)


def override(config: ml_collections.ConfigDict, path: str, value) -> None:
    parent = config
    *parents, leaf = path.split(".")
    for part in parents:
        parent = parent[part]
    with parent.ignore_type():
        parent[leaf] = value


def assert_invalid(config: ml_collections.ConfigDict, field: str) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    message = str(error.value)
    assert message.startswith(field), message
    assert "\n" not in message
    return message


# Folder configs name their data on the command line (COCO's own files: their root), the COCO
# ones find their ImageNet weights at a path relative to the working directory; until then
# that path is missing.
MISSING_FILE_CONFIGS = {
    "mask_rcnn_folder.py": "config.data.annotations",
    "unet_folder.py": "config.data.images",
    "mask_rcnn_coco.py": "config.data.root",
    "mask_rcnn_coco_tfds.py": "config.model.pretrained",
    "panoptic_coco.py": "config.model.pretrained",
}


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_is_valid(name):
    if name in MISSING_FILE_CONFIGS:
        assert_invalid(load_config_file(name), MISSING_FILE_CONFIGS[name])
    else:
        validate_config(load_config_file(name))


def test_flax_example_field_names_at_top_level():
    config = load_config_file("unet_shapes.py")
    for field in (
        "seed",
        "batch_size",
        "num_train_steps",
        "learning_rate",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
    ):
        assert field in config
    for group in ("model", "data", "loss", "optimizer"):
        assert isinstance(config[group], ml_collections.ConfigDict)


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("num_train_steps", -5, "config.num_train_steps"),
        ("batch_size", 0, "config.batch_size"),
        ("learning_rate", 0.0, "config.learning_rate"),
        ("eval_every_steps", 0, "config.eval_every_steps"),
        ("loss.name", "ce+dise", "config.loss.name"),
        ("loss.name", "", "config.loss.name"),
        ("data.image_size", 100, "config.data.image_size"),
        ("model.norm", "layer", "config.model.norm"),
        ("model.dtype", "float16", "config.model.dtype"),
        ("model.features", (), "config.model.features"),
        ("model.dropout_rate", 1.0, "config.model.dropout_rate"),
        ("optimizer.name", "adagrad", "config.optimizer.name"),
        ("optimizer.warmup_steps", 10**9, "config.optimizer.warmup_steps"),
        ("optimizer.nesterov", 1, "config.optimizer.nesterov"),
        ("data.num_classes", 7, "config.data.class_names"),
        ("loss.ignore_label", 2, "config.loss.ignore_label"),
        ("data.max_object_size", 2.0, "config.data: min_object_size and max_object_size"),
        ("data.name", "coco", "config.data.name"),
        ("grad_accumulation_steps", 0, "config.grad_accumulation_steps"),
        ("grad_accumulation_steps", 3, "config.grad_accumulation_steps"),
        ("ema_decay", 1.0, "config.ema_decay"),
        ("ema_decay", -0.1, "config.ema_decay"),
        ("eval_workers", -1, "config.eval_workers"),
        ("eval_scorer", "fast", "config.eval_scorer"),
        ("model.remat", "yes", "config.model.remat"),
        ("data.num_workers", -2, "config.data.num_workers=-2"),
    ],
)
def test_invalid_value_names_the_field(path, value, field):
    config = load_config_file("unet_shapes.py")
    override(config, path, value)
    assert_invalid(config, field)


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("model.name", "maskrcnn", "config.model.name"),
        ("model.backbone", "resnet19", "config.model.backbone"),
        ("model.backbone_norm", "layer", "config.model.backbone_norm"),
        ("model.fpn_norm", "batch", "config.model.fpn_norm"),
        ("model.roi_extractor", "roi_warp", "config.model.roi_extractor"),
        ("model.dtype", "float16", "config.model.dtype"),
        ("model.fast_cpu_ops", 1, "config.model.fast_cpu_ops"),
        ("model.backbone_width", 0, "config.model.backbone_width"),
        ("model.fpn_channels", 0, "config.model.fpn_channels"),
        ("model.fpn_channels", 64.0, "config.model.fpn_channels"),
        ("model.rpn_batch_size_per_image", -1, "config.model.rpn_batch_size_per_image"),
        ("model.rpn_pre_nms_topk_train", 0, "config.model.rpn_pre_nms_topk_train"),
        ("model.rpn_post_nms_topk_test", True, "config.model.rpn_post_nms_topk_test"),
        ("model.rpn_post_nms_topk_train", 2501, "config.model.rpn_post_nms_topk_train"),
        ("model.roi_batch_size_per_image", 0, "config.model.roi_batch_size_per_image"),
        ("model.mask_rois_per_image", 0, "config.model.mask_rois_per_image"),
        ("model.mask_rois_per_image", 129, "config.model.mask_rois_per_image"),
        ("model.box_head_dim", 0, "config.model.box_head_dim"),
        ("model.mask_head_channels", 0, "config.model.mask_head_channels"),
        ("model.mask_head_convs", 0, "config.model.mask_head_convs"),
        ("model.detections_per_image", 0, "config.model.detections_per_image"),
        ("model.roi_sampling_ratio", 0, "config.model.roi_sampling_ratio"),
        ("model.freeze_at", -1, "config.model.freeze_at"),
        ("model.anchor_sizes", (16.0, 32.0, 64.0, 128.0), "config.model.anchor_sizes"),
        ("model.anchor_sizes", (16.0, 32.0, 0.0, 128.0, 256.0), "config.model.anchor_sizes"),
        (
            "model.anchor_sizes",
            ((16.0,), (32.0, 40.0), 64.0, 128.0, 256.0),
            "config.model.anchor_sizes",
        ),
        ("model.anchor_sizes", ((), (), (), (), ()), "config.model.anchor_sizes"),
        ("model.aspect_ratios", (), "config.model.aspect_ratios"),
        ("model.aspect_ratios", (0.5, -1.0), "config.model.aspect_ratios"),
        ("model.rpn_fg_iou_threshold", 1.5, "config.model.rpn_fg_iou_threshold"),
        ("model.rpn_fg_iou_threshold", 0.2, "config.model.rpn_bg_iou_threshold"),
        ("model.rpn_bg_iou_threshold", 0.0, "config.model.rpn_bg_iou_threshold"),
        ("model.rpn_positive_fraction", 0.0, "config.model.rpn_positive_fraction"),
        ("model.roi_iou_threshold", "0.5", "config.model.roi_iou_threshold"),
        ("model.roi_positive_fraction", 2.0, "config.model.roi_positive_fraction"),
        ("model.rpn_nms_threshold", 0.0, "config.model.rpn_nms_threshold"),
        ("model.test_nms_threshold", 1.1, "config.model.test_nms_threshold"),
        ("model.mask_threshold", 0.0, "config.model.mask_threshold"),
        ("model.score_threshold", 1.0, "config.model.score_threshold"),
        ("model.score_threshold", -0.1, "config.model.score_threshold"),
        ("data.image_size", 112, "config.data.image_size"),
    ],
)
def test_invalid_mask_rcnn_value_names_the_field(path, value, field):
    config = load_config_file("mask_rcnn_shapes.py")
    override(config, path, value)
    assert_invalid(config, field)


def test_mask_rcnn_image_size_error_states_the_divisor():
    config = load_config_file("mask_rcnn_shapes.py")
    config.data.image_size = 112
    message = assert_invalid(config, "config.data.image_size")
    assert "Mask R-CNN needs multiples of 32" in message


def test_mask_rcnn_accepts_other_anchor_forms_and_optional_values():
    config = load_config_file("mask_rcnn_shapes.py")
    config.model.anchor_sizes = ((16, 20), (32, 40), (64, 80), (128, 160), (256, 320))
    with config.model.ignore_type():
        config.model.fpn_norm = "none"
        config.model.mask_rois_per_image = None
    config.model.score_threshold = 0.0
    validate_config(config)


def test_mask_rcnn_fields_left_out_take_the_model_defaults():
    config = load_config_file("mask_rcnn_shapes.py")
    for field in list(config.model.keys()):
        if field != "name":
            del config.model[field]
    validate_config(config)
    # MaskRCNN's default roi_batch_size_per_image is 512.
    config.model.mask_rois_per_image = 513
    assert_invalid(config, "config.model.mask_rois_per_image")
    del config.model.name
    assert_invalid(config, "config.model.name is missing")


@pytest.mark.parametrize(
    "key, suggestion",
    [("fpn_channel", "did you mean 'fpn_channels'?"), ("backbone_depth", "did you mean")],
)
def test_unknown_mask_rcnn_key_suggests_a_field(key, suggestion):
    config = load_config_file("mask_rcnn_shapes.py")
    config.model[key] = 64
    message = assert_invalid(config, f"config.model.{key}")
    assert suggestion in message


def test_unknown_mask_rcnn_key_without_a_close_field():
    config = load_config_file("mask_rcnn_shapes.py")
    config.model.learning_rate_multiplier = 2.0
    message = assert_invalid(config, "config.model.learning_rate_multiplier")
    assert "did you mean" not in message


def test_loss_section_is_required_for_unet_only():
    config = load_config_file("unet_shapes.py")
    del config.loss
    assert_invalid(config, "config.loss is missing")
    config = load_config_file("mask_rcnn_shapes.py")
    assert "loss" not in config
    validate_config(config)


def test_image_size_error_states_the_divisor():
    config = load_config_file("unet_shapes.py")
    config.model.features = (8, 16, 32, 64)
    config.data.image_size = 100
    with pytest.raises(ConfigError, match=r"image_size=100 must be divisible by 8"):
        validate_config(config)
    config.data.image_size = 104
    validate_config(config)


def test_config_json_round_trip(tmp_path):
    config = load_config_file("unet_shapes.py")
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    restored = config_files.load_workdir_config(str(tmp_path))
    assert json.loads(restored.to_json()) == json.loads(config.to_json_best_effort())
    validate_config(restored)


def run_main(
    *overrides: str, config: str = "unet_shapes.py", workdir: str = "/nonexistent/never-created"
) -> subprocess.CompletedProcess:
    """`python -m jaxseg.main` with `configs/<config>`, `workdir` and `overrides`."""
    command = [
        sys.executable,
        "-m",
        "jaxseg.main",
        f"--config=configs/{config}",
        f"--workdir={workdir}",
        *overrides,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.modle.norm=batch", "no such field 'modle' in config (did you mean 'model'?)"),
        ("--config.model.normm=batch", "no such field 'normm' in config.model (did you mean 'norm'?)"),
        ("--config.num_train_steps=ten", "--config.num_train_steps=ten"),
        ("--config.num_train_steps=-1", "config.num_train_steps=-1 must be an integer >= 1"),
        ("--config.data.num_workers=-1", "config.data.num_workers=-1 must be None"),
    ],
)
def test_command_line_error_is_one_line_naming_the_field(override, expected):
    result = run_main(override)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not os.path.exists("/nonexistent/never-created")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.model.backbone=resnet19", "config.model.backbone='resnet19' is not one of"),
        ("--config.model.fpn_channels=0", "config.model.fpn_channels=0 must be an integer >= 1"),
        ("--config.data.image_size=112", "Mask R-CNN needs multiples of 32"),
        (
            "--config.model.pretrained=/nonexistent/r50.safetensors",
            "config.model.pretrained='/nonexistent/r50.safetensors' is not a file.",
        ),
    ],
)
def test_mask_rcnn_command_line_error_is_one_line_naming_the_field(override, expected):
    result = run_main(override, config="mask_rcnn_shapes.py")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not os.path.exists("/nonexistent/never-created")


@pytest.fixture
def coco_folder_config(tmp_path):
    """configs/mask_rcnn_folder.py completed with a COCO folder written under tmp_path."""
    from tests.test_coco_folder import CLASS_NAMES, write_coco_folder

    annotations, images, _ = write_coco_folder(str(tmp_path / "coco"))
    config = load_config_file("mask_rcnn_folder.py")
    config.data.annotations, config.data.images = annotations, images
    config.data.num_classes, config.data.class_names = len(CLASS_NAMES), CLASS_NAMES
    return config


@pytest.fixture
def semantic_folder_config(tmp_path):
    """configs/unet_folder.py completed with image and label folders under tmp_path."""
    from tests.test_semantic_folder import CLASS_NAMES, write_semantic_folder

    images, labels, _ = write_semantic_folder(str(tmp_path / "semantic"))
    config = load_config_file("unet_folder.py")
    config.data.images, config.data.labels = images, labels
    config.data.num_classes, config.data.class_names = len(CLASS_NAMES), CLASS_NAMES
    return config


def test_completed_folder_configs_are_valid(coco_folder_config, semantic_folder_config):
    validate_config(coco_folder_config)
    validate_config(semantic_folder_config)


def test_coco_folder_class_names_must_be_the_json_categories(coco_folder_config):
    coco_folder_config.data.class_names = ("background", "dog", "cat")
    message = assert_invalid(coco_folder_config, "config.data.class_names")
    assert "--config.data.class_names=('background', 'cat', 'dog')" in message
    coco_folder_config.data.class_names = None
    assert_invalid(coco_folder_config, "config.data.class_names")


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("data.annotations", "/nonexistent/instances.json", "config.data.annotations='/nonex"),
        ("data.images", None, "config.data.images is not set"),
        ("data.validation_fraction", 1.0, "config.data.validation_fraction=1.0 must lie in"),
        ("data.ignore_label", 2, "config.data.ignore_label=2 is a class id"),
        ("data.ignore_label", 256, "config.data.ignore_label=256 must be an int in [1, 255]"),
    ],
)
def test_invalid_coco_folder_value_names_the_field(coco_folder_config, path, value, field):
    override(coco_folder_config, path, value)
    assert_invalid(coco_folder_config, field)


def test_malformed_coco_json_is_a_config_error(coco_folder_config):
    with open(coco_folder_config.data.annotations, "w") as file:
        file.write("{")
    message = assert_invalid(coco_folder_config, "config.data.annotations: ")
    assert "instances.json: not valid JSON" in message


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("data.labels", "/nonexistent/labels", "config.data.labels='/nonexistent/labels'"),
        ("data.num_classes", 300, "config.data.class_names has 3 names"),
        ("data.label_suffix", "_gtFine", "config.data.labels="),
    ],
)
def test_invalid_semantic_folder_value_names_the_field(semantic_folder_config, path, value, field):
    override(semantic_folder_config, path, value)
    assert_invalid(semantic_folder_config, field)


def test_unet_folder_ignore_label_is_shared_with_the_loss(semantic_folder_config):
    semantic_folder_config.data.ignore_label = 200
    assert semantic_folder_config.loss.ignore_label == 200
    validate_config(semantic_folder_config)
    semantic_folder_config.loss = ml_collections.ConfigDict({"name": "ce", "ignore_label": 255})
    assert_invalid(semantic_folder_config, "config.data.ignore_label=200 must equal")


def test_folder_config_command_line_error_is_one_line_naming_the_field():
    result = run_main(
        "--config.data.annotations=/nonexistent/instances.json",
        "--config.data.images=/nonexistent/images",
        config="mask_rcnn_folder.py",
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "config.data.annotations='/nonexistent/instances.json': no such file" in lines[0]


@pytest.mark.parametrize(
    "name, path, value, field",
    [
        ("unet_pets.py", "data.tfds_name", None, "config.data.tfds_name is not set"),
        (
            "mask_rcnn_coco_tfds.py",
            "data.tfds_name",
            "coco",
            "config.data.tfds_name='coco' is not one",
        ),
        ("unet_pets.py", "data.train_split", 7, "config.data.train_split=7 must be a TFDS split"),
        (
            "unet_pets.py",
            "data.validation_split",
            "validation",
            "config.data.validation_split='validation': 'validation' is not an annotated split "
            "of oxford_iiit_pet; expected one of ('train', 'test')",
        ),
        # COCO's test split has no annotations.
        (
            "mask_rcnn_coco_tfds.py",
            "data.validation_split",
            "test",
            "config.data.validation_split=",
        ),
        ("unet_pets.py", "data.download", "yes", "config.data.download='yes' must be True or"),
        (
            "unet_pets.py",
            "data.ignore_label",
            2,
            "config.data.ignore_label=2 must be an int in [3,",
        ),
        (
            "mask_rcnn_coco_tfds.py",
            "data.image_size",
            8,
            "config.data.image_size=8 must be an int in",
        ),
        ("mask_rcnn_coco_tfds.py", "data.num_classes", 80, "config.data.class_names="),
    ],
)
def test_invalid_catalog_value_names_the_field(name, path, value, field):
    config = load_config_file(name)
    override(config, path, value)
    assert_invalid(config, field)


def test_catalog_class_names_must_be_the_catalogs():
    config = load_config_file("unet_pets.py")
    config.data.class_names = ("background", "cat", "dog")
    message = assert_invalid(config, "config.data.class_names=")
    assert "\"--config.data.class_names=('background', 'pet', 'border')\"" in message


def test_catalog_splits_take_slices_and_default_to_the_datasets():
    config = load_config_file("unet_pets.py")
    config.data.train_split = "train[:90%]"
    config.data.validation_split = "train[90%:]+test"
    validate_config(config)
    del config.data.train_split
    del config.data.validation_split
    validate_config(config)
    dataset = catalog_source.catalog_config_from_data_config(config.data)
    assert (dataset.train_split, dataset.validation_split) == ("train", "test")


def test_catalog_config_command_line_error_is_one_line_naming_the_field():
    result = run_main("--config.data.tfds_name=coco/2099", config="mask_rcnn_coco_tfds.py")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "config.data.tfds_name='coco/2099' is not one of" in lines[0]


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("data.scale_jitter", (1.25, 0.8), "config.data.scale_jitter=(1.25, 0.8) must be None or"),
        ("data.scale_jitter", (0.5,), "config.data.scale_jitter=(0.5,)"),
        ("data.scale_jitter", (-1.0, 2.0), "config.data.scale_jitter=(-1.0, 2.0)"),
        ("data.color_jitter", 1.5, "config.data.color_jitter=1.5 must be a number in [0, 1]"),
        ("data.color_jitter", -0.2, "config.data.color_jitter=-0.2"),
        ("data.color_jitter", "strong", "config.data.color_jitter='strong'"),
    ],
)
def test_invalid_augmentation_names_the_field(path, value, message):
    config = load_config_file("unet_shapes.py")
    override(config, path, value)
    assert assert_invalid(config, f"config.{path}").startswith(message)


def test_scale_jitter_padding_must_be_ignored_by_the_loss():
    config = load_config_file("unet_shapes.py")
    config.loss.ignore_label = 200
    validate_config(config)  # no padding without scale jitter
    config.data.scale_jitter = (0.8, 1.25)
    message = assert_invalid(config, "config.data.scale_jitter")
    assert "ignore label 255" in message and "config.loss.ignore_label=200" in message
    config.data.ignore_label = 200
    validate_config(config)


def test_augmentation_fields_are_optional_and_off_in_synthetic_configs():
    for name in ("unet_shapes.py", "mask_rcnn_shapes.py", "mask_rcnn_r50_fpn.py"):
        data = load_config_file(name).data
        assert data.scale_jitter is None and data.color_jitter == 0.0
    config = load_config_file("unet_shapes.py")
    del config.data["scale_jitter"], config.data["color_jitter"]
    validate_config(config)
    for name in ("mask_rcnn_folder.py", "unet_folder.py", "unet_pets.py"):
        data = load_config_file(name).data
        assert data.scale_jitter == (0.8, 1.25) and data.color_jitter == 0.2
    data = load_config_file("mask_rcnn_coco.py").data  # detectron2's multi-scale instead
    assert data.scale_jitter is None and data.color_jitter == 0.2
    assert data.train_shorter_sides == (640, 672, 704, 736, 768, 800)


def test_augmentation_command_line_error_is_one_line_naming_the_field():
    result = run_main("--config.data.scale_jitter=(1.5, 0.5)")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "config.data.scale_jitter=(1.5, 0.5) must be None or" in lines[0]
