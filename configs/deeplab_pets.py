"""DeepLabv3+ on Oxford-IIIT Pet (TFDS `oxford_iiit_pet`): background, pet and border.

The data, schedule and loss of configs/unet_pets.py (128x128 trimaps, batch 16, 10,000
steps; see there for the classes, the splits and how the dataset is prepared) with the
DeepLabv3+ of configs/deeplab_shapes.py at the paper's widths: ResNet-18's own (64) and
256-channel ASPP and decoder.
Run:
python -m jaxseg.main --config=configs/deeplab_pets.py --workdir=DIR
"""

import ml_collections

from configs import deeplab_shapes, unet_pets


def get_config() -> ml_collections.ConfigDict:
    """The U-Net pets experiment with a DeepLabv3+ (dilated ResNet-18, width 64)."""
    config = unet_pets.get_config()
    config.model = deeplab_shapes.get_config().model
    config.model.backbone_width = 64
    config.model.aspp_channels = 256
    config.model.decoder_channels = 256
    # The shapes model's stem without its max-pool and without dropout suit its small objects;
    # here the paper's ResNet (and ImageNet files, if given, with pixel_mean and pixel_std set
    # to ImageNet's) and dropout stay.
    config.model.stem_pool = True
    config.model.dropout_rate = 0.1
    return config
