"""Sources are built by name, and extraction filters, deduplicates and falls back."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.synth.masks import (
    SOURCE_NAMES,
    MaskSourceError,
    RandomShapes,
    SkinHair,
    build_mask_sources,
    extract_instances,
)
from tests.model_training.synth.masks.support import FixedSource, iou, square_mask


def test_unknown_source_name_lists_valid_names():
    with pytest.raises(MaskSourceError, match="valid names") as error:
        build_mask_sources(["foreground", "sam2"])
    assert all(name in str(error.value) for name in SOURCE_NAMES)


def test_weighted_sources_need_weights():
    with pytest.raises(MaskSourceError, match="segmenter_weights"):
        build_mask_sources(["torchscript"])
    with pytest.raises(MaskSourceError, match="sam_weights"):
        build_mask_sources(["sam"])


def test_build_shares_matte_and_faces():
    foreground, faces, skin_hair, random = build_mask_sources(["foreground", "faces", "skin_hair", "random"])
    assert isinstance(skin_hair, SkinHair)
    assert skin_hair.foreground is foreground and skin_hair.faces is faces
    assert isinstance(random, RandomShapes)


def test_extract_falls_back_to_random_shapes_when_nothing_is_found():
    image = np.full((160, 240, 3), 128, np.uint8)
    sources = build_mask_sources(["foreground", "faces", "skin_hair"])
    instances = extract_instances(image, sources, rng=np.random.default_rng(3))
    assert instances and all(i.kind == "random" for i in instances)
    again = extract_instances(image, sources, rng=np.random.default_rng(3))
    assert [i.mask.tobytes() for i in instances] == [i.mask.tobytes() for i in again]


def test_extract_deduplicates_and_drops_tiny_masks():
    shape = (100, 100)
    square = square_mask(shape, 10, 60, 10, 60)
    almost = square.copy()
    almost[10, 10] = 0
    speck = square_mask(shape, 90, 92, 90, 92)
    other = square_mask(shape, 70, 95, 5, 50)
    sources = [FixedSource([square, speck], "a"), FixedSource([almost, other], "b")]
    instances = extract_instances(np.zeros((*shape, 3), np.uint8), sources)
    assert [i.kind for i in instances] == ["a", "b"]
    assert np.array_equal(instances[0].mask, square)
    assert np.array_equal(instances[1].mask, other)


def test_extract_caps_the_number_of_instances():
    masks = [square_mask((60, 60), 0, 30, 2 * k, 2 * k + 4) for k in range(10)]
    instances = extract_instances(np.zeros((60, 60, 3), np.uint8), [FixedSource(masks)], max_instances=4)
    assert len(instances) == 4


def test_extract_on_disk_image_is_deterministic(disk_image):
    image, disk = disk_image
    runs = [
        extract_instances(
            image,
            build_mask_sources(["foreground", "faces", "skin_hair", "random"]),
            rng=np.random.default_rng(5),
        )
        for _ in range(2)
    ]
    assert [(i.kind, i.mask.tobytes()) for i in runs[0]] == [(i.kind, i.mask.tobytes()) for i in runs[1]]
    assert runs[0][0].kind == "foreground" and iou(runs[0][0].mask, disk) > 0.8


def test_extract_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        extract_instances(np.zeros((10, 10), np.uint8), [])
