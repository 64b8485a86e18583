"""Up-front checks of an experiment config, each error naming the bad field.

`validate_config` runs before any data is built or any model is compiled, so a
typo or an impossible value fails in a second with one line such as
`config.data.image_size=100 must be divisible by 8 ...`.
"""

from typing import Any, Iterable

import ml_collections

from jaxseg.data import catalog, coco_folder, folders, pipeline
from jaxseg.errors import ConfigError, did_you_mean

DATA_NAMES = pipeline.DATASETS
NORMS = ("batch", "group", "none")
UPSAMPLINGS = ("transpose", "bilinear")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant", "steps")
# MaskRCNN's fpn_norm: None (or "none" in a config) or "group".
FPN_NORMS = (None, "none", "group")
MASK_RCNN_POSITIVE_INTS = (
    "backbone_width",
    "fpn_channels",
    "rpn_batch_size_per_image",
    "rpn_pre_nms_topk_train",
    "rpn_post_nms_topk_train",
    "rpn_pre_nms_topk_test",
    "rpn_post_nms_topk_test",
    "roi_batch_size_per_image",
    "box_head_dim",
    "mask_head_channels",
    "mask_head_convs",
    "detections_per_image",
    "roi_sampling_ratio",
)
MASK_RCNN_FRACTIONS = (
    "rpn_fg_iou_threshold",
    "rpn_bg_iou_threshold",
    "rpn_positive_fraction",
    "roi_iou_threshold",
    "roi_positive_fraction",
    "rpn_nms_threshold",
    "test_nms_threshold",
    "mask_threshold",
)
# (pre-NMS top-k per level, post-NMS top-k per image) of training and inference.
RPN_TOPK_PAIRS = (
    ("rpn_pre_nms_topk_train", "rpn_post_nms_topk_train"),
    ("rpn_pre_nms_topk_test", "rpn_post_nms_topk_test"),
)
# Accepted ranges of fraction-like fields.
INTERVALS = {
    "(0, 1]": lambda value: 0.0 < value <= 1.0,
    "[0, 1)": lambda value: 0.0 <= value < 1.0,
}


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node = config
    parts = path.split(".")
    for depth, part in enumerate(parts, 1):
        if part not in node:
            raise ConfigError(f"config.{'.'.join(parts[:depth])} is missing.")
        node = node[part]
    return node


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _is_positive_numbers(value) -> bool:
    """Whether `value` is a non-empty tuple or list of numbers > 0."""
    return (
        isinstance(value, (tuple, list))
        and bool(value)
        and all(_is_number(v) and v > 0 for v in value)
    )


def _require_int(config, path: str, minimum: int) -> int:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config.{path}={value!r} must be an integer >= {minimum}.")
    return value


def _require_positive_number(config, path: str) -> float:
    value = _get(config, path)
    if not _is_number(value) or not value > 0:
        raise ConfigError(f"config.{path}={value!r} must be a number > 0.")
    return value


def _require_fraction(config, path: str, interval: str, note: str = "") -> float:
    """The number at `path`, which must lie in `interval` (a key of INTERVALS)."""
    value = _get(config, path)
    if not _is_number(value) or not INTERVALS[interval](value):
        raise ConfigError(f"config.{path}={value!r} must be a number in {interval}{note}.")
    return value


def _require_bool(config, path: str) -> bool:
    value = _get(config, path)
    if not isinstance(value, bool):
        raise ConfigError(f"config.{path}={value!r} must be True or False.")
    return value


def _require_choice(config, path: str, choices: Iterable[Any]) -> Any:
    value = _get(config, path)
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"config.{path}={value!r} is not one of {', '.join(map(str, choices))}.")
    return value


def _validate_top_level(config) -> None:
    _require_int(config, "seed", 0)
    _require_int(config, "batch_size", 1)
    _require_int(config, "eval_batch_size", 1)
    _require_int(config, "num_train_steps", 1)
    _require_positive_number(config, "learning_rate")
    for field in (
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        _require_int(config, field, 1)
    _require_int(config, "num_prediction_images", 0)
    _require_int(config, "max_consecutive_nonfinite_steps", 1)
    steps = _require_int(config, "grad_accumulation_steps", 1)
    if config.batch_size % steps:
        raise ConfigError(
            f"config.grad_accumulation_steps={steps} must divide "
            f"config.batch_size={config.batch_size}."
        )
    _require_fraction(config, "ema_decay", "[0, 1)", " (0 = no EMA)")


def _validate_unet(config) -> None:
    from jaxseg.models.unet import required_divisor  # pylint: disable=g-import-not-at-top

    features = _get(config, "model.features")
    if (
        not isinstance(features, (tuple, list))
        or not features
        or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in features)
    ):
        raise ConfigError(
            f"config.model.features={features!r} must be a non-empty tuple of positive ints."
        )
    _require_choice(config, "model.norm", NORMS)
    _require_choice(config, "model.upsample", UPSAMPLINGS)
    _require_choice(config, "model.dtype", DTYPES)
    _require_bool(config, "model.remat")
    _require_fraction(config, "model.dropout_rate", "[0, 1)")
    size = _require_int(config, "data.image_size", 1)
    divisor = required_divisor(features)
    if size % divisor:
        raise ConfigError(
            f"config.data.image_size={size} must be divisible by {divisor}: the U-Net "
            f"with config.model.features={tuple(features)} pools "
            f"{len(features) - 1} times by 2."
        )
    _validate_loss(config)


def _check_mask_rcnn_keys(config) -> None:
    from jaxseg.models.factory import mask_rcnn_config_fields  # pylint: disable=g-import-not-at-top

    allowed = mask_rcnn_config_fields()
    for key in config.model:
        if key != "name" and key not in allowed:
            raise ConfigError(
                f"config.model.{key} is not a Mask R-CNN field{did_you_mean(key, allowed)}."
            )


def _mask_rcnn_value(config, field: str) -> Any:
    """`config.model.<field>`, or MaskRCNN's default where the config leaves it out."""
    from jaxseg.models.mask_rcnn import MaskRCNN  # pylint: disable=g-import-not-at-top

    return config.model[field] if field in config.model else getattr(MaskRCNN, field)


def _present(model, fields: Iterable[str]) -> list[str]:
    """The `fields` that `model` sets, in the order given."""
    return [field for field in fields if field in model]


def _check_mask_rcnn_fields(config) -> None:
    from jaxseg.models import resnet, roi_heads  # pylint: disable=g-import-not-at-top

    model = config.model
    choices = {
        "backbone": tuple(resnet.RESNETS),
        "backbone_norm": resnet.NORMS,
        "fpn_norm": FPN_NORMS,
        "roi_extractor": roi_heads.EXTRACTORS,
        "dtype": DTYPES,
    }
    for field in _present(model, choices):
        _require_choice(config, f"model.{field}", choices[field])
    for field in _present(model, MASK_RCNN_POSITIVE_INTS):
        _require_int(config, f"model.{field}", 1)
    for field in _present(model, MASK_RCNN_FRACTIONS):
        _require_fraction(config, f"model.{field}", "(0, 1]")
    if "freeze_at" in model:
        _require_int(config, "model.freeze_at", 0)
    if model.get("mask_rois_per_image") is not None:
        _require_int(config, "model.mask_rois_per_image", 1)
    if "fast_cpu_ops" in model:
        _require_bool(config, "model.fast_cpu_ops")
    if "score_threshold" in model:
        _require_fraction(config, "model.score_threshold", "[0, 1)")


def _check_mask_rcnn_anchors(config) -> None:
    from jaxseg.models.mask_rcnn import RPN_LEVELS  # pylint: disable=g-import-not-at-top

    sizes = config.model.get("anchor_sizes")
    if sizes is not None:
        levels = [tuple(s) if isinstance(s, (tuple, list)) else (s,) for s in sizes]
        if (
            len(levels) != len(RPN_LEVELS)
            or not all(_is_positive_numbers(level) for level in levels)
            or len({len(level) for level in levels}) != 1
        ):
            raise ConfigError(
                f"config.model.anchor_sizes={sizes!r} must give {len(RPN_LEVELS)} levels "
                "(P2..P6), each a number > 0 or a non-empty tuple of them, the same count "
                "on every level."
            )
    ratios = config.model.get("aspect_ratios")
    if ratios is not None and not _is_positive_numbers(ratios):
        raise ConfigError(
            f"config.model.aspect_ratios={ratios!r} must be a non-empty tuple of numbers > 0."
        )


def _check_mask_rcnn_relations(config) -> None:
    from jaxseg.models.mask_rcnn import RPN_LEVELS  # pylint: disable=g-import-not-at-top

    for pre_field, post_field in RPN_TOPK_PAIRS:
        pre = _mask_rcnn_value(config, pre_field)
        post = _mask_rcnn_value(config, post_field)
        if post > len(RPN_LEVELS) * pre:
            raise ConfigError(
                f"config.model.{post_field}={post} must not exceed {len(RPN_LEVELS)} x "
                f"config.model.{pre_field}={pre} (the pre-NMS top-k is per level)."
            )
    background = _mask_rcnn_value(config, "rpn_bg_iou_threshold")
    foreground = _mask_rcnn_value(config, "rpn_fg_iou_threshold")
    if background > foreground:
        raise ConfigError(
            f"config.model.rpn_bg_iou_threshold={background} must not exceed "
            f"config.model.rpn_fg_iou_threshold={foreground}."
        )
    mask_rois = _mask_rcnn_value(config, "mask_rois_per_image")
    rois = _mask_rcnn_value(config, "roi_batch_size_per_image")
    if mask_rois is not None and mask_rois > rois:
        raise ConfigError(
            f"config.model.mask_rois_per_image={mask_rois} must not exceed "
            f"config.model.roi_batch_size_per_image={rois}."
        )


def _validate_mask_rcnn(config) -> None:
    from jaxseg.models.resnet import INPUT_DIVISOR  # pylint: disable=g-import-not-at-top

    _check_mask_rcnn_keys(config)
    _check_mask_rcnn_fields(config)
    _check_mask_rcnn_anchors(config)
    _check_mask_rcnn_relations(config)
    size = _require_int(config, "data.image_size", 1)
    if size % INPUT_DIVISOR:
        raise ConfigError(
            f"config.data.image_size={size} must be divisible by {INPUT_DIVISOR}: Mask R-CNN "
            f"needs multiples of {INPUT_DIVISOR} (the stride of the ResNet's last stage)."
        )


def _validate_model(config) -> None:
    from jaxseg.models.factory import MODEL_NAMES  # pylint: disable=g-import-not-at-top

    validators = {"unet": _validate_unet, "mask_rcnn": _validate_mask_rcnn}
    validators[_require_choice(config, "model.name", MODEL_NAMES)](config)


def _validate_class_names(config) -> None:
    num_classes = _require_int(config, "data.num_classes", 2)
    names = _get(config, "data.class_names")
    if len(names) != num_classes:
        raise ConfigError(
            f"config.data.class_names has {len(names)} names but "
            f"config.data.num_classes={num_classes}."
        )


def _as_config_error(prefix: str, function, *args):
    """`function(*args)`; a ValueError becomes a ConfigError starting with `prefix`."""
    try:
        return function(*args)
    except ValueError as error:
        raise ConfigError(f"{prefix}{error}") from error


def _validate_shapes_data(config) -> None:
    _validate_class_names(config)
    _require_int(config, "data.num_train", 1)
    _require_int(config, "data.num_validation", 1)
    _require_int(config, "data.num_test", 1)
    _as_config_error("config.data: ", pipeline.shapes_config_from_data_config, config.data)


def _check_ignore_label(config) -> None:
    ignore_label = config.data.get("ignore_label", folders.DEFAULT_IGNORE_LABEL)
    if "loss" in config and ignore_label != config.loss.get("ignore_label"):
        raise ConfigError(
            f"config.data.ignore_label={ignore_label!r} must equal "
            f"config.loss.ignore_label={config.loss.get('ignore_label')!r}: the padding of "
            "the images holds the data's ignore label."
        )


def _validate_coco_folder_data(config) -> None:
    _check_ignore_label(config)
    folder = _as_config_error(
        "config.data.", pipeline.coco_folder_config_from_data_config, config.data
    )
    path, ignore_label = folder.annotations, folder.ignore_label
    names = _as_config_error("config.data.annotations: ", coco_folder.read_class_names, path)
    _as_config_error("config.data.", pipeline.check_class_names, config.data, names, path)
    _as_config_error("config.data.", coco_folder.check_ignore_label, ignore_label, names, path)


def _validate_semantic_folder_data(config) -> None:
    _validate_class_names(config)
    _check_ignore_label(config)
    _as_config_error("config.data.", pipeline.semantic_folder_config_from_data_config, config.data)


def _validate_catalog_data(config) -> None:
    _check_ignore_label(config)
    dataset = _as_config_error(
        "config.data.", pipeline.catalog_config_from_data_config, config.data
    )
    names = catalog.class_names(dataset.tfds_name)
    _as_config_error(
        "config.data.", pipeline.check_class_names, config.data, names, dataset.tfds_name
    )


def _validate_augmentation(config) -> None:
    augmentation = _as_config_error(
        "config.data.", pipeline.augmentation_from_data_config, config.data
    )
    loss_ignore_label = config.loss.get("ignore_label") if "loss" in config else None
    padding_label = augmentation.ignore_label
    if augmentation.scale_jitter is not None and loss_ignore_label not in (None, padding_label):
        raise ConfigError(
            f"config.data.scale_jitter={config.data.scale_jitter!r} pads semantic maps with "
            f"the data's ignore label {padding_label} (config.data.ignore_label, default "
            f"{folders.DEFAULT_IGNORE_LABEL}), which must equal "
            f"config.loss.ignore_label={loss_ignore_label!r}."
        )


def _validate_data(config) -> None:
    validators = {
        "shapes": _validate_shapes_data,
        "coco_folder": _validate_coco_folder_data,
        "semantic_folder": _validate_semantic_folder_data,
        "tfds": _validate_catalog_data,
    }
    validators[_require_choice(config, "data.name", DATA_NAMES)](config)
    _require_int(config, "data.max_instances", 1)
    _validate_augmentation(config)


def _validate_loss(config) -> None:
    from jaxseg.losses import parse_loss_spec  # pylint: disable=g-import-not-at-top

    spec = _get(config, "loss.name")
    try:
        parse_loss_spec(spec)
    except ValueError as error:
        raise ConfigError(f"config.loss.name={spec!r}: {error}") from error
    ignore = _require_int(config, "loss.ignore_label", 0)
    if ignore < _get(config, "data.num_classes"):
        raise ConfigError(
            f"config.loss.ignore_label={ignore} collides with a class id "
            f"(config.data.num_classes={config.data.num_classes})."
        )


def _validate_optimizer(config) -> None:
    _require_choice(config, "optimizer.name", OPTIMIZERS)
    _require_choice(config, "optimizer.schedule", SCHEDULES)
    warmup = _require_int(config, "optimizer.warmup_steps", 0)
    if warmup >= config.num_train_steps:
        raise ConfigError(
            f"config.optimizer.warmup_steps={warmup} must be smaller than "
            f"config.num_train_steps={config.num_train_steps}."
        )
    _validate_decay_steps(config, warmup)
    _require_bool(config, "optimizer.nesterov")
    if _get(config, "optimizer.weight_decay") < 0:
        raise ConfigError("config.optimizer.weight_decay must be >= 0.")
    clip = _get(config, "optimizer.grad_clip_norm")
    if clip is not None and clip <= 0:
        raise ConfigError(
            f"config.optimizer.grad_clip_norm={clip!r} must be > 0 (or None for no clipping)."
        )


def _validate_decay_steps(config, warmup: int) -> None:
    """`optimizer.decay_steps`: ascending steps after the warmup, only with schedule "steps"."""
    steps = _get(config, "optimizer.decay_steps")
    if config.optimizer.schedule != "steps":
        if steps:
            raise ConfigError(
                f"config.optimizer.decay_steps={steps!r} only apply to "
                f"config.optimizer.schedule='steps' (it is {config.optimizer.schedule!r})."
            )
        return
    _require_fraction(config, "optimizer.decay_factor", "(0, 1]")
    if (
        not isinstance(steps, (tuple, list))
        or not steps
        or any(isinstance(s, bool) or not isinstance(s, int) for s in steps)
        or list(steps) != sorted(set(steps))
        or steps[0] <= warmup
        or steps[-1] > config.num_train_steps
    ):
        raise ConfigError(
            f"config.optimizer.decay_steps={steps!r} must be ascending integers after "
            f"config.optimizer.warmup_steps={warmup} and at most "
            f"config.num_train_steps={config.num_train_steps}."
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field of `config`."""
    _validate_top_level(config)
    _validate_data(config)
    _validate_model(config)
    _validate_optimizer(config)
