"""DeepLabv3+ on the built-in synthetic shapes dataset (4 classes: background + 3 shapes).

The U-Net shapes experiment (configs/unet_shapes.py: 128x128, batch 8, 2,000 steps,
AdamW) with a narrow dilated ResNet-18 DeepLabv3+ instead, sized so that a CPU train
step costs no more than the U-Net's (median 688 ms vs 911 ms, same run, 2 shared AMD
EPYC cores). At 128x128 and output stride 16, C5 is 8x8: the paper's ASPP rates
(6, 12, 18), chosen for 513x513 crops (C5 33x33), would leave the 12 and 18 convs
nothing but their centre tap inside the map, so the rates here are scaled down to it.
Run:
python -m jaxseg.main --config=configs/deeplab_shapes.py --workdir=DIR
"""

import ml_collections

from configs import unet_shapes


def get_config() -> ml_collections.ConfigDict:
    """The shapes experiment of configs/unet_shapes.py with a small DeepLabv3+."""
    config = unet_shapes.get_config()
    config.model = ml_collections.ConfigDict()
    config.model.name = "deeplabv3plus"
    config.model.backbone = "resnet18"
    # ResNet stem / res2 width (64 in the paper); res5 is 8x wider.
    config.model.backbone_width = 32
    config.model.output_stride = 16
    # Rates at output stride 16 (doubled automatically at output stride 8).
    config.model.aspp_rates = (2, 4, 6)
    # The paper's 256 both, halved with the backbone.
    config.model.aspp_channels = 128
    config.model.decoder_channels = 128
    config.model.norm = "batch"
    config.model.dropout_rate = 0.1
    # "bfloat16": bf16 activations and matmuls; params, optimizer state and loss stay float32.
    config.model.dtype = "float32"
    # XLA:CPU-friendly formulations of the undilated convs and the stem pool; off on GPU/TPU.
    config.model.fast_cpu_ops = True
    return config
