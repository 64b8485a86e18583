"""Shared test references: random model variables and a convolution by definition, in numpy."""
import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, x, seed=1, **init_kwargs):
    """Variables with the structure `model.init(key, x, train=False, **init_kwargs)` gives,
    drawn in numpy (compiling the Flax initialisers takes seconds): He-scaled kernels,
    scales in [0.5, 1.5], small biases, normal running means, running variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            values = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        elif name in ("scale", "var"):
            values = rng.uniform(0.5, 1.5 if name == "scale" else 2.0, leaf.shape)
        else:
            values = rng.normal(0.0, 1.0 if name == "mean" else 0.1, leaf.shape)
        return jnp.asarray(values, leaf.dtype)

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False, **init_kwargs))
    return jax.tree_util.tree_map_with_path(draw, shapes)


def numpy_conv(x, kernel, stride=1, pad=0, dilation=1):
    """[N, H, W, Cin] x [k, k, Cin, Cout] -> [N, H', W', Cout] float64, by definition:
    symmetric zero padding `pad`, taps `dilation` apart, windows `stride` apart."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    span = dilation * (k - 1) + 1
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h, out_w = (h + 2 * pad - span) // stride + 1, (w + 2 * pad - span) // stride + 1
    out = np.zeros((n, out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride, i * stride + span, dilation)
            cols = slice(j * stride, j * stride + span, dilation)
            out[:, i, j] = np.einsum("nabc,abco->no", padded[:, rows, cols], kernel)
    return out
