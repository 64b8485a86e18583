"""Flax Linen models."""
from jaxseg.models.unet import UNet

__all__ = ["UNet"]
from jaxseg.models.backbone import ResNetFPN
from jaxseg.models.fpn import FPN
from jaxseg.models.resnet import RESNETS, ResNet, build_resnet

__all__ += ["FPN", "RESNETS", "ResNet", "ResNetFPN", "build_resnet"]
