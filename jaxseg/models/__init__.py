"""Flax Linen models."""
from jaxseg.models.unet import UNet

__all__ = ["UNet"]
