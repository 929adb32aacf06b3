"""Compositing: no seam at the mask edge, coverage stays where it is put, honest labels."""

import cv2
import numpy as np
import pytest

from model_training.synth.blur import EdgeRing, Straight
from model_training.synth.composite import (
    blur_instance,
    fill_background,
    linear_to_srgb,
    srgb_to_linear,
)
from model_training.synth.config import CompositeConfig
from model_training.synth.generate import soft_alpha

CFG = CompositeConfig()


def _disk_scene(fg=0.85, bg=0.25, size=160, radius=45):
    img = np.full((size, size, 3), bg, np.float32)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius, 255, -1)
    img[mask > 0] = fg
    return img, mask


def _grad(img: np.ndarray) -> np.ndarray:
    g = img.mean(axis=2)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1))


def _reference_blur(img: np.ndarray, blur: Straight) -> np.ndarray:
    """What the whole frame looks like with the disk moving over the flat background."""
    lin = srgb_to_linear(img)
    return linear_to_srgb(cv2.filter2D(lin, cv2.CV_32F, blur.kernel(), borderType=cv2.BORDER_REFLECT_101))


@pytest.mark.parametrize("angle", [0.0, 37.0, 90.0])
def test_no_seam_at_the_instance_boundary(angle):
    img, mask = _disk_scene()
    blur = Straight(length=10.0, angle=angle)
    out = blur_instance(img, soft_alpha(mask), blur, None, CFG)
    assert out.visible
    ref = _reference_blur(img, blur)
    # The steepest step anywhere is no steeper than the blur itself makes it (edges
    # parallel to the motion stay sharp in a real blur too, so that is the bound).
    assert _grad(out.image).max() <= _grad(ref).max() * 1.1 + 2 / 255


def test_the_seam_check_catches_a_hard_mask_blend():
    """The bound above is not vacuous: a naive hard-mask composite breaks it."""
    img, mask = _disk_scene()
    blur = Straight(length=10.0, angle=0.0)
    ref = _reference_blur(img, blur)
    naive = np.where(mask[..., None] > 0, ref, img)
    assert _grad(naive).max() > _grad(ref).max() * 1.1 + 2 / 255


def test_edge_ring_has_no_seam_at_the_band_cut():
    img, mask = _disk_scene()
    blur = EdgeRing(length=8.0, angle=20.0, bend1=0.0, bend2=0.0, band=6.0)
    out = blur_instance(img, soft_alpha(mask), blur, None, CFG)
    ref = _reference_blur(img, Straight(length=8.0, angle=20.0))
    assert out.visible
    assert _grad(out.image).max() <= _grad(ref).max() * 1.1 + 2 / 255
    assert not out.label[80, 80], "the interior of an edge ring is not blurred"


def test_partial_coverage_blurs_only_inside_the_instance():
    rng = np.random.default_rng(0)
    img = rng.random((160, 160, 3)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img = np.round(img * 255) / 255
    mask = np.zeros((160, 160), np.uint8)
    cv2.rectangle(mask, (40, 40), (120, 120), 255, -1)
    cover = np.zeros((160, 160), np.float32)
    cover[:, :80] = 1.0
    blur = Straight(length=6.0, angle=0.0)
    out = blur_instance(img, soft_alpha(mask), blur, cover, CFG)
    assert out.visible
    changed = np.abs(np.round(out.image * 255) - np.round(img * 255)).max(axis=2) > 0
    reach = int(np.ceil(blur.reach() + 3 * (CFG.feather_base_px + CFG.feather_per_extent * 6.0)))
    near_instance = cv2.dilate(mask, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
    assert not changed[~near_instance].any(), "pixels away from the instance changed"
    assert not changed[60:100, 110:118].any(), "the uncovered part of the instance changed"
    assert changed[60:100, 45:70].mean() > 0.5, "the covered part was not blurred"
    assert not out.label[:, 100:].any() and out.label[60:100, 45:70].all()


def test_label_covers_the_flat_inside_of_a_blurred_region():
    img, mask = _disk_scene(radius=50)
    out = blur_instance(img, soft_alpha(mask), Straight(length=6.0, angle=0.0), None, CFG)
    assert out.label[80, 80], "the flat centre of a blurred object counts as blurred"
    assert out.visible_fraction < 0.5, "only the edges of a flat disk change, yet all is labelled"


def test_invisible_blur_is_relabelled_sharp():
    img = np.full((100, 100, 3), 0.5, np.float32)
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (50, 50), 30, 255, -1)
    out = blur_instance(img, soft_alpha(mask), Straight(length=8.0, angle=0.0), None, CFG)
    assert not out.visible
    assert not out.label.any() and not out.extent_px.any()
    assert out.image is img


def test_extent_is_zero_outside_the_label():
    img, mask = _disk_scene()
    out = blur_instance(img, soft_alpha(mask), Straight(length=12.0, angle=45.0), None, CFG)
    assert (out.extent_px[~out.label] == 0).all()
    assert out.extent_px[out.label].min() == pytest.approx(12.0, abs=1.0)


def test_background_fill_is_exact_outside_the_hole_and_smooth_inside():
    img = np.zeros((64, 64, 3), np.float32)
    img[:, :32] = 0.2
    img[:, 32:] = 0.8
    hole = np.zeros((64, 64), bool)
    hole[20:44, 20:44] = True
    filled = fill_background(img, hole)
    np.testing.assert_array_equal(filled[~hole], img[~hole])
    assert 0.2 <= filled[hole].min() and filled[hole].max() <= 0.8
    assert filled[32, 21, 0] < filled[32, 42, 0]
