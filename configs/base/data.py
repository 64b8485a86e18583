"""`config.data` sections shared by experiment files: the synthetic shapes, and the base of
every real-data section (datasets read from files: folders, TFDS catalogs)."""

import ml_collections


def shapes(image_size: int = 128, max_instances: int = 16) -> ml_collections.ConfigDict:
    """The built-in shapes dataset: background + circle, rectangle, triangle; flips only."""
    data = ml_collections.ConfigDict()
    data.name = "shapes"
    data.data_dir = ml_collections.FieldReference(None, field_type=str)
    data.image_size = image_size
    data.num_classes = 4
    data.class_names = ("background", "circle", "rectangle", "triangle")
    data.num_train = 2000
    data.num_validation = 200
    data.num_test = 200
    data.max_instances = max_instances
    data.flip = True
    # Training-only augmentations (jaxseg/data/augment.py): the scale jitter range
    # (min_scale, max_scale), None = off, and the colour jitter strength, 0 = off.
    data.scale_jitter = ml_collections.FieldReference(None, field_type=tuple)
    data.color_jitter = 0.0
    data.cache_decoded = True
    # Input worker processes (jaxseg/data/pipeline.py): None = from the host's cores, 0 = none.
    data.num_workers = ml_collections.FieldReference(None, field_type=int)
    # How the procedural dataset is generated (see jaxseg/data/shapes.py).
    data.generation_seed = 0
    data.min_shapes = 1
    data.max_shapes = 6
    data.min_object_size = 0.08
    data.max_object_size = 0.4
    data.empty_fraction = 0.02
    data.min_visible_pixels = 10
    return data


def panoptic_shapes(image_size: int = 128, max_instances: int = 16) -> ml_collections.ConfigDict:
    """The shapes' things over stuff regions (jaxseg/data/panoptic_shapes.py): the shapes
    section with the semantic head's classes, the thing class first."""
    data = shapes(image_size, max_instances)
    data.name = "panoptic_shapes"
    data.stuff_class_names = ("thing", "sky", "grass", "sand")
    return data


def real_images(name: str, *, image_size: int, max_instances: int) -> ml_collections.ConfigDict:
    """The fields every dataset read from files shares: where TFDS keeps it, the static image
    size (aspect ratio kept, longer side image_size unless resize_shorter_side is set; padded
    with the ignore label 255), flips, scale jitter
    (0.8-1.25) and colour jitter (0.2) in training, and no cache of decoded examples."""
    data = ml_collections.ConfigDict()
    data.name = name
    data.data_dir = ml_collections.FieldReference(None, field_type=str)
    data.image_size = image_size
    # How images are fitted to the canvas (jaxseg/data/geometry.py): None = the longer side
    # image_size; an int = detectron2's shortest-edge resize, the longer side at most
    # resize_max_longer_side (None = image_size); train_shorter_sides: training's choices.
    data.resize_shorter_side = ml_collections.FieldReference(None, field_type=int)
    data.resize_max_longer_side = ml_collections.FieldReference(None, field_type=int)
    data.train_shorter_sides = ml_collections.FieldReference(None, field_type=tuple)
    data.ignore_label = 255
    data.max_instances = max_instances
    data.flip = True
    # Training-only augmentations (jaxseg/data/augment.py).
    data.scale_jitter = (0.8, 1.25)
    data.color_jitter = 0.2
    data.cache_decoded = False
    # Input worker processes (jaxseg/data/pipeline.py): None = from the host's cores, 0 = none.
    data.num_workers = ml_collections.FieldReference(None, field_type=int)
    return data
