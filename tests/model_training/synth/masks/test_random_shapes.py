"""Random shapes are reproducible and never empty."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.synth.masks import RandomShapes
from tests.model_training.synth.masks.support import assert_valid


def test_random_shapes_deterministic_per_seed():
    image = np.zeros((120, 200, 3), np.uint8)
    shapes = RandomShapes(count=(2, 4))
    first = shapes(image, np.random.default_rng(7))
    again = shapes(image, np.random.default_rng(7))
    other = shapes(image, np.random.default_rng(8))
    assert 2 <= len(first) <= 4
    for instance in first + other:
        assert instance.kind == "random"
        assert_valid(instance, (120, 200))
    assert [i.mask.tobytes() for i in first] == [i.mask.tobytes() for i in again]
    assert [i.mask.tobytes() for i in first] != [i.mask.tobytes() for i in other]


def test_random_shapes_without_rng_follow_image_content():
    shapes = RandomShapes()
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), np.uint8)
    first = shapes(image)
    again = shapes(image.copy())
    assert [i.mask.tobytes() for i in first] == [i.mask.tobytes() for i in again]
    changed = image.copy()
    changed[0, 0] ^= 1
    assert [i.mask.tobytes() for i in shapes(changed)] != [i.mask.tobytes() for i in first]


@pytest.mark.parametrize("shape", ["ellipse", "polygon", "blob"])
def test_every_random_shape_kind_is_non_empty(shape):
    shapes = RandomShapes(count=(3, 3), shapes=[shape])
    for seed in range(5):
        for instance in shapes(np.zeros((64, 48, 3), np.uint8), np.random.default_rng(seed)):
            assert_valid(instance, (64, 48))


def test_random_shapes_on_a_single_pixel():
    (instance,) = RandomShapes(count=(1, 1))(np.zeros((1, 1, 3), np.uint8))
    assert instance.area == 1
