"""Mask R-CNN ResNet-50-FPN on COCO 2017 from COCO's own files, 1x schedule.

DATA: COCO laid out as COCO distributes it, under one folder given by config.data.root:
  annotations/instances_train2017.json   train2017/   (118,287 images)
  annotations/instances_val2017.json     val2017/     (5,000 images)
read as a COCO-format folder with a JSON per split (jaxseg/data/coco_folder.py): the
records keep the JPEGs as they are (about the folder's 18 GB) and are prepared once under
config.data.data_dir (TFDS's default when unset). The validation split is scored against
instances_val2017.json itself, every one of its images, as papers report AP.
configs/mask_rcnn_coco_tfds.py reads TFDS's `coco/2017_panoptic` catalog instead, for those
who have it prepared.

The literature's 1x schedule (Mask R-CNN R50-FPN, detectron2 model zoo: box AP 38.6, mask AP
35.2) is 90k iterations of batch 16, SGD lr 0.02, momentum 0.9, weight decay 1e-4, 1,000
warmup iterations, lr x0.1 at 60k and 80k, shorter image side 800 (longer at most 1333),
horizontal flips, from ImageNet-pretrained weights with frozen BatchNorm, the stem and res2
frozen (FREEZE_AT 2) and no weight decay on normalization parameters. The same here:
`config.model.pretrained` names the ImageNet ResNet-50 (default
weights/resnet50.safetensors; torchvision's or timm's state dict, or the Flax file
`python -m jaxseg.models.pretrained --input=resnet50-0676ba61.pth --resnet=resnet50
--output=weights/resnet50.safetensors` writes; a `.pth` loads directly where torch is
installed), freeze_at 2 (no update, no decay), FrozenBatchNorm with the file's statistics
and affine, fixed; images resized as detectron2 resizes them (shorter side 800, in
training one of 640 to 800 in steps of 32, longer side at most 1333: a 640x480 image
becomes 1067x800). What differs:
- the images are padded to one static 1344x1344 canvas (1333 rounded up to a multiple of
  32) instead of each batch's largest image (training draws its shorter side per image and
  resizes the source image to it, as detectron2 does);
- training adds colour jitter (strength 0.2), which the 1x schedule does not use;
- detectron2's model zoo starts from MSRA's caffe ResNet-50 (BGR, pixel std 1); torchvision's
  weights (RGB, ImageNet mean and std, as configured) are what torchvision's own Mask R-CNN
  uses (37.9 box / 34.6 mask AP at 26 epochs);
- the warmup ramps from 0, not from detectron2's 0.001 x the rate.
Without the file the run stops at validation naming `config.model.pretrained`; from scratch
(`--config.model.pretrained=None`) use GroupNorm and longer schedules (He et al.,
"Rethinking ImageNet Pre-training", 2019): FrozenBatchNorm with fresh statistics is the
identity.
Sized for accelerators (fast_cpu_ops off).
Run: python -m jaxseg.main --config=configs/mask_rcnn_coco.py --workdir=DIR \\
    --config.data.root=COCO_DIR
"""

import ml_collections

from configs import mask_rcnn_r50_fpn
from configs.base import data
from jaxseg.data import catalog


def get_config() -> ml_collections.ConfigDict:
    """ResNet-50-FPN Mask R-CNN with detectron2's sizes on COCO 2017's own files on a
    1344x1344 canvas, 1x."""
    config = mask_rcnn_r50_fpn.get_config()
    config.batch_size = 16
    config.eval_batch_size = 8
    config.num_train_steps = 90000
    config.log_every_steps = 20
    config.eval_every_steps = 30000
    config.checkpoint_every_steps = 5000
    config.num_prediction_images = 8

    config.data = data.real_images("coco_folder", image_size=1344, max_instances=100)
    config.data.resize_shorter_side = 800
    config.data.resize_max_longer_side = 1333
    config.data.train_shorter_sides = (640, 672, 704, 736, 768, 800)
    config.data.scale_jitter = None
    config.data.root = ml_collections.FieldReference(None, field_type=str)
    config.data.annotations = "annotations/instances_train2017.json"
    config.data.images = "train2017"
    config.data.validation_annotations = "annotations/instances_val2017.json"
    config.data.validation_images = "val2017"
    config.data.num_classes = len(catalog.COCO_CLASS_NAMES)
    config.data.class_names = catalog.COCO_CLASS_NAMES

    config.model.backbone_norm = "frozen_batch"
    config.model.pretrained = "weights/resnet50.safetensors"
    config.model.freeze_at = 2
    config.model.fast_cpu_ops = False

    config.optimizer.name = "sgd"
    config.learning_rate = 0.02
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_norms = False
    config.optimizer.schedule = "steps"
    config.optimizer.warmup_steps = 1000
    config.optimizer.decay_steps = (60000, 80000)
    config.optimizer.decay_factor = 0.1
    return config
