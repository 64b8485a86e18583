"""The model an experiment config describes (`config.model.name`: "unet" or "mask_rcnn")."""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.models.unet import UNet

MODEL_NAMES = ("unet", "mask_rcnn")
# MaskRCNN attributes a config may not set: the class count comes from config.data.
_MASK_RCNN_DERIVED = ("num_classes", "parent", "name")


def mask_rcnn_config_fields() -> tuple[str, ...]:
    """The MaskRCNN attributes `config.model` may set (besides `name`)."""
    return tuple(
        field.name
        for field in dataclasses.fields(MaskRCNN)
        if field.init and field.name not in _MASK_RCNN_DERIVED
    )


def _unet(config: ml_collections.ConfigDict) -> UNet:
    model_config = config.model
    return UNet(
        num_classes=config.data.num_classes,
        features=tuple(model_config.features),
        norm=model_config.norm,
        upsample=model_config.upsample,
        dropout_rate=model_config.dropout_rate,
        skip_connections=model_config.skip_connections,
        dtype=jnp.dtype(model_config.dtype),
        fast_cpu_ops=model_config.fast_cpu_ops,
        remat=model_config.remat,
    )


def _anchor_sizes(sizes) -> tuple[tuple[float, ...], ...]:
    """One size per level (`(16, 32, ...)`) or several (`((16, 20), (32, 40), ...)`)."""
    return tuple(
        tuple(float(s) for s in level) if isinstance(level, (tuple, list)) else (float(level),)
        for level in sizes
    )


def _mask_rcnn(config: ml_collections.ConfigDict) -> MaskRCNN:
    fields = {key: value for key, value in config.model.items() if key != "name"}
    converters = {
        "anchor_sizes": _anchor_sizes,
        "aspect_ratios": lambda ratios: tuple(float(r) for r in ratios),
        "pixel_mean": tuple,
        "pixel_std": tuple,
        "dtype": jnp.dtype,
        "fpn_norm": lambda norm: None if norm in (None, "none") else norm,
    }
    for key, convert in converters.items():
        if key in fields:
            fields[key] = convert(fields[key])
    return MaskRCNN(num_classes=config.data.num_classes, **fields)


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module of `config.model` for `config.data.num_classes` classes.

    "unet": `UNet` from `features`, `norm`, `upsample`, `dropout_rate`,
    `skip_connections`, `dtype`, `fast_cpu_ops`, `remat`. "mask_rcnn": `MaskRCNN` with
    every other `config.model` field passed as the attribute of that name
    (`anchor_sizes` may give one size per level; `fpn_norm` "none" means None).
    """
    name = config.model.name
    if name == "unet":
        return _unet(config)
    if name == "mask_rcnn":
        return _mask_rcnn(config)
    raise ValueError(f"config.model.name={name!r} is not one of {', '.join(MODEL_NAMES)}.")
