"""DeepLabv3+ on the built-in synthetic shapes dataset (4 classes: background + 3 shapes).

The U-Net shapes experiment (configs/unet_shapes.py: 128x128, batch 8, 2,000 steps,
AdamW) with a narrow dilated ResNet-18 DeepLabv3+ instead. At 128x128 the paper's ASPP
rates (6, 12, 18 at output stride 16), chosen for 513x513 crops (C5 33x33), would leave
the 12 and 18 convs nothing but their centre tap inside an 8x8 C5, so the rates here are
scaled down to it (2, 4, 6 at stride 16; 4, 8, 12 at stride 8).

The network runs on the images doubled (input_scale 2, bilinear; the logits come back at
128x128). At the images' own size it underfit: 2,000 steps ended at mIoU 0.862 (output
stride 16, dropout 0.1) and 0.867 (output stride 8, no dropout) with the train loss at
0.107 against the U-Net's 0.039, and its errors were shapes taken for other shapes, not
only outlines (validation confusion matrix at step 1,000: a tenth of the rectangles' pixels
called triangle). Its objects are 10 to 51 pixels wide, and the ResNet's stem (a stride-2
7x7 conv and a stride-2 max pool) leaves them 2.5 to 13 cells at C2, where the U-Net keeps
full resolution in its first block. 500-step probes (experiments/deeplab_shapes_probe.py,
table in experiments/results/) found no gain in the learning rate (1e-3, 1e-2) or a twice
wider backbone. DeepLab evaluates at input scales up to 1.75 x; here the scale applies in
training too, as if the dataset were rendered at 256 x 256.
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
    # An ImageNet ResNet file (torchvision / timm state dict, see jaxseg.models.pretrained)
    # replacing the backbone's random init; it needs backbone_width 64. None: random init.
    config.model.pretrained = ml_collections.FieldReference(None, field_type=str)
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
    # The network sees the images resized by this factor (see the module docstring).
    config.model.input_scale = 2
    return config
