"""jaxseg: semantic and instance segmentation in JAX/Flax."""
