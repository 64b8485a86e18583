"""ResNet U-Net on the built-in synthetic shapes dataset (4 classes: background + 3 shapes).

The U-Net shapes experiment (configs/unet_shapes.py: 128x128, batch 8, 2,000 steps, AdamW,
CE + Dice) with `resnet_unet` (jaxseg/models/resnet_unet.py) instead: a narrow ResNet-18
encoder (width 32, BatchNorm) trained from scratch, its C2..C5 the skips of a 5-block
bilinear decoder back to full resolution. Record: results/unet_resnet_shapes/ (mIoU 0.881
at 2,000 steps, against the plain U-Net's 0.942; the README says more).

ImageNet weights: `--config.model.pretrained=FILE --config.model.backbone_width=64`
(a torchvision / timm resnet18 state dict, see jaxseg.models.pretrained); the images are
normalized with ImageNet's mean and std either way.
Run:
python -m jaxseg.main --config=configs/unet_resnet_shapes.py --workdir=DIR
"""

import ml_collections

from configs import unet_shapes
from jaxseg.models import layers


def get_config() -> ml_collections.ConfigDict:
    """The shapes experiment of configs/unet_shapes.py with a small ResNet-18 U-Net."""
    config = unet_shapes.get_config()
    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet_unet"
    config.model.backbone = "resnet18"
    # ResNet stem / res2 width (64 for ImageNet files); res5 is 8x wider.
    config.model.backbone_width = 32
    config.model.backbone_norm = "batch"
    config.model.freeze_at = 0
    # An ImageNet ResNet file replacing the backbone's random init; None: random init.
    config.model.pretrained = ml_collections.FieldReference(None, field_type=str)
    # Decoder widths at strides 16, 8, 4 (with the C4, C3, C2 skips), 2 and 1.
    config.model.decoder_channels = (128, 64, 32, 16, 16)
    config.model.decoder_norm = "batch"
    # ImageNet's, in [0, 1] units (what ImageNet weights expect).
    config.model.pixel_mean = layers.IMAGENET_MEAN
    config.model.pixel_std = layers.IMAGENET_STD
    # "bfloat16": bf16 activations and matmuls; params, optimizer state and loss stay float32.
    config.model.dtype = "float32"
    # XLA:CPU-friendly formulations of the undilated convs and the stem pool; off on GPU/TPU.
    config.model.fast_cpu_ops = True
    return config
