"""U-Net on Oxford-IIIT Pet (TFDS `oxford_iiit_pet`): background, pet and border from the trimaps.

TFDS's trimaps label each pixel 1 (pet), 2 (background) or 3 (border: the uncertain band
along the pet's outline); here the classes are 0 background, 1 pet, 2 border
(jaxseg/data/catalog.py). Images are resized (aspect ratio kept, longer side 128) and padded
to 128x128 when read, the padding labelled with the ignore label. TFDS's train split (3,680
images) trains, its test split (3,669) validates (the dataset has no validation split).
The first run downloads (about 800 MB) and prepares the dataset in TFDS's array_record format
under config.data.data_dir (TFDS's default when unset); preparing needs TensorFlow
(pip install tensorflow-cpu), reading does not. With --config.data.download=False a missing
dataset stops the run, saying how to prepare it.
Run: python -m jaxseg.main --config=configs/unet_pets.py --workdir=DIR
"""

import ml_collections

from configs import unet_shapes
from configs.base import data
from jaxseg.data import catalog


def get_config() -> ml_collections.ConfigDict:
    """The shapes U-Net experiment on Oxford-IIIT Pet trimaps at 128x128."""
    config = unet_shapes.get_config()
    config.batch_size = 16
    config.eval_batch_size = 16
    # About 43 epochs of the 3,680 training images.
    config.num_train_steps = 10000
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.optimizer.warmup_steps = 500
    config.model.features = (32, 64, 128, 256)

    config.data = data.real_images("tfds", image_size=128, max_instances=1)
    config.data.tfds_name = "oxford_iiit_pet"
    config.data.train_split = "train"
    config.data.validation_split = "test"
    config.data.download = True
    config.data.num_classes = len(catalog.PET_CLASS_NAMES)
    config.data.class_names = catalog.PET_CLASS_NAMES
    # Decoded examples take 82 KB each at 128x128: about 600 MB for both splits.
    config.data.cache_decoded = True

    # One value for both: padding pixels count in no loss or metric.
    config.loss.ignore_label = config.data.get_ref("ignore_label")
    return config
