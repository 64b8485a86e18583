import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.ops import AnchorGenerator


def reference_anchors(sizes, ratios, strides, offset, height, width):
    """Anchors by loops: level, grid row, grid column, size, aspect ratio."""
    out = []
    for level_sizes, stride in zip(sizes, strides):
        for row in range(math.ceil(height / stride)):
            for col in range(math.ceil(width / stride)):
                cx, cy = (col + offset) * stride, (row + offset) * stride
                for size in level_sizes:
                    for ratio in ratios:
                        w = math.sqrt(size * size / ratio)
                        h = ratio * w
                        out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return np.array(out)


def test_hand_computed_anchors():
    generator = AnchorGenerator(sizes=((32.0,),), aspect_ratios=(1.0, 4.0), strides=(16,))
    anchors = generator(16, 40)  # grid of 1 x 3 cells
    assert anchors.shape == (6, 4) and anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0], [-16, -16, 16, 16])
    np.testing.assert_allclose(anchors[1], [-8, -32, 8, 32])  # ratio 4: 16 wide, 64 high
    np.testing.assert_allclose(anchors[2], [0, -16, 32, 16])
    centered = AnchorGenerator(sizes=((32.0,),), aspect_ratios=(1.0,), strides=(16,), offset=0.5)
    np.testing.assert_allclose(centered(16, 16), [[-8, -8, 24, 24]])


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_multilevel_anchors_match_loop_reference(offset):
    sizes = ((32.0, 40.0), (64.0,), (128.0,))
    ratios = (0.5, 1.0, 2.0)
    strides = (8, 16, 32)
    generator = AnchorGenerator(sizes=sizes, aspect_ratios=ratios, strides=strides, offset=offset)
    anchors = generator(70, 100)
    np.testing.assert_allclose(anchors, reference_anchors(sizes, ratios, strides, offset, 70, 100), atol=1e-4)
    assert generator.num_anchors_per_level(70, 100) == (9 * 13 * 6, 5 * 7 * 3, 3 * 4 * 3)
    assert generator.grid_sizes(70, 100) == ((9, 13), (5, 7), (3, 4))


def test_default_fpn_counts_and_split_by_level():
    generator = AnchorGenerator()
    counts = generator.num_anchors_per_level(800, 800)
    assert counts == (200 * 200 * 3, 100 * 100 * 3, 50 * 50 * 3, 25 * 25 * 3, 13 * 13 * 3)
    anchors = generator(800, 800)
    assert anchors.shape == (sum(counts), 4)
    levels = generator.split_by_level(anchors, 800, 800)
    assert [len(level) for level in levels] == list(counts)
    np.testing.assert_array_equal(levels[2], generator.level_anchors(2, 50, 50))
    per_image_scores = np.zeros((2, sum(counts)))
    assert [s.shape for s in generator.split_by_level(per_image_scores, 800, 800, axis=1)] == [(2, c) for c in counts]


def test_anchors_are_constants_under_jit():
    generator = AnchorGenerator(sizes=((16.0,), (32.0,)), strides=(4, 8))

    @jax.jit
    def anchor_areas():
        anchors = jnp.asarray(generator(32, 32))
        return (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])

    areas = np.asarray(anchor_areas())
    np.testing.assert_allclose(areas[: 64 * 3], 256.0, rtol=1e-5)
    np.testing.assert_allclose(areas[64 * 3:], 1024.0, rtol=1e-5)


def test_anchor_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one entry per level"):
        AnchorGenerator(sizes=((32.0,),), strides=(4, 8))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(aspect_ratios=(1.0, 0.0))
    with pytest.raises(ValueError, match="offset"):
        AnchorGenerator(offset=1.0)
    with pytest.raises(ValueError, match="image size"):
        AnchorGenerator()(0, 10)
    with pytest.raises(ValueError, match="values must have"):
        AnchorGenerator().split_by_level(np.zeros((5, 4)), 64, 64)
