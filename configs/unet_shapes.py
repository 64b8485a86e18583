"""U-Net on the built-in synthetic shapes dataset (4 classes: background + 3 shapes).

Sized to reach validation mIoU >= 0.90 in under 10 minutes on 2 CPU cores.
Run: python -m jaxseg.main --config=configs/unet_shapes.py --workdir=DIR
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The default experiment configuration."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_train_steps = 2000
    config.learning_rate = 3e-3
    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3
    config.num_prediction_images = 8
    # Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.
    config.max_consecutive_nonfinite_steps = 10
    # Micro-batches per optimizer step (batch_size must be divisible by it x devices).
    config.grad_accumulation_steps = 1
    # Decay of the EMA of params used for evaluation (0 = no EMA).
    config.ema_decay = 0.0

    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.features = (16, 32, 64, 128)
    config.model.norm = "batch"
    config.model.upsample = "transpose"
    config.model.dropout_rate = 0.0
    config.model.skip_connections = True
    # "bfloat16": bf16 activations and matmuls; params, optimizer state and loss stay float32.
    config.model.dtype = "float32"
    # Recompute the U-Net blocks' activations in the backward pass (saves memory).
    config.model.remat = False
    # XLA:CPU-friendly custom-gradient layers; turn off on GPU/TPU.
    config.model.fast_cpu_ops = True

    config.data = ml_collections.ConfigDict()
    config.data.name = "shapes"
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.data.image_size = 128
    config.data.num_classes = 4
    config.data.class_names = ("background", "circle", "rectangle", "triangle")
    config.data.num_train = 2000
    config.data.num_validation = 200
    config.data.num_test = 200
    config.data.max_instances = 16
    config.data.flip = True
    # Training-only augmentations (jaxseg/data/augment.py): the scale jitter range
    # (min_scale, max_scale), None = off, and the colour jitter strength, 0 = off.
    config.data.scale_jitter = ml_collections.FieldReference(None, field_type=tuple)
    config.data.color_jitter = 0.0
    config.data.cache_decoded = True
    # How the procedural dataset is generated (see jaxseg/data/shapes.py).
    config.data.generation_seed = 0
    config.data.min_shapes = 1
    config.data.max_shapes = 6
    config.data.min_object_size = 0.08
    config.data.max_object_size = 0.4
    config.data.empty_fraction = 0.02
    config.data.min_visible_pixels = 10

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "ce+dice"
    config.loss.ignore_label = 255

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 1e-4
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True  # SGD only
    config.optimizer.grad_clip_norm = 1.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    # schedule "steps": the learning rate is multiplied by decay_factor at each decay step.
    config.optimizer.decay_steps = ()
    config.optimizer.decay_factor = 0.1
    return config
