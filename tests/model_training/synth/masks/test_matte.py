"""The foreground matte finds the subject and survives degenerate images."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.synth.masks import ForegroundMatte
from tests.model_training.synth.masks.support import assert_valid, iou


def test_foreground_matte_recovers_disk(disk_image):
    image, disk = disk_image
    instances = ForegroundMatte()(image)
    assert instances, "no foreground found"
    assert instances[0].kind == "foreground"
    assert_valid(instances[0], disk.shape)
    assert iou(instances[0].mask, disk) > 0.8


def test_foreground_matte_is_deterministic(disk_image):
    image, _ = disk_image
    first = ForegroundMatte()(image)
    second = ForegroundMatte()(image)
    assert len(first) == len(second)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first, second, strict=False))


@pytest.mark.parametrize(
    "image",
    [
        np.full((120, 160, 3), 128, np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((3, 500, 3), np.uint8),
        np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8),
    ],
    ids=["flat", "1px", "sliver", "tiny-noise"],
)
def test_foreground_matte_survives_degenerate_images(image):
    for instance in ForegroundMatte()(image):
        assert_valid(instance, image.shape[:2])


def test_flat_image_has_no_foreground():
    assert ForegroundMatte()(np.full((120, 160, 3), 128, np.uint8)) == []
