"""Crop-safe ROIs (qc_worker.detector.roi)."""

import numpy as np
import pytest
from pydantic import ValidationError

from qc_worker.detector.boxes import expand_box
from qc_worker.detector.faces import Foreground
from qc_worker.detector.roi import (
    RoiConfig,
    best_crop,
    blur_integral,
    crop_safe_rois,
    parse_aspect,
)

T = 0.5
H, W = 1080, 1920


def _inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _check_shape(roi, h, w, config=None):
    config = config or RoiConfig()
    x0, y0, x1, y1 = roi.bbox
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    ratio = parse_aspect(roi.aspect)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(ratio, rel=0.01)
    largest_w = min(w, h * ratio)
    assert x1 - x0 >= config.min_fraction * largest_w - 1


def test_16_9_roi_of_an_image_blurred_on_its_left_third_is_on_the_right_and_safe():
    prob = np.zeros((H, W), np.float32)
    prob[:, : W // 3] = 0.9
    rois = crop_safe_rois(prob, T)
    assert [r.aspect for r in rois] == ["16:9", "4:3", "1:1", "2:3"]
    roi = rois[0]
    _check_shape(roi, H, W)
    assert roi.safe and roi.blur_fraction <= RoiConfig().max_blur_fraction
    x0, _, x1, _ = roi.bbox
    assert x1 == W and x0 >= W // 4  # on the right side
    assert (x0 + x1) / 2 > W / 2
    for r in rois:
        _check_shape(r, H, W)
        assert r.safe and r.keeps_faces


def test_largest_crop_when_nothing_is_blurred():
    prob = np.zeros((H, W), np.float32)
    rois = crop_safe_rois(prob, T)
    assert rois[0].bbox == (0, 0, W, H) and rois[0].area_fraction == 1.0
    assert rois[0].blur_fraction == 0.0 and rois[0].safe
    assert rois[2].bbox[3] - rois[2].bbox[1] == H  # 1:1 takes the full height
    assert rois[2].bbox == (420, 0, 1500, 1080)  # centred, with no foreground to steer it


def test_roi_keeps_a_face_inside_even_against_the_foreground():
    prob = np.zeros((H, W), np.float32)
    prob[:, 1600:] = 0.9  # the right edge is blurred
    face = (60, 120, 260, 320)
    rois = crop_safe_rois(prob, T, faces=[face], foreground=(1300, 300, 1900, 800))
    kept = expand_box(face, RoiConfig().face_margin, W, H)
    for roi in rois:
        _check_shape(roi, H, W)
        assert roi.keeps_faces and roi.safe, roi
        assert _inside(kept, roi.bbox), roi


def test_roi_keeps_a_face_in_a_narrow_feasible_range():
    # With two places per axis the grid over the whole width tries only x = 0 (blurred)
    # and x = 1200 (loses the face); the places that keep the face must be tried as well.
    prob = np.zeros((H, W), np.float32)
    prob[:, :600] = 0.9
    face = (900, 400, 990, 500)
    config = RoiConfig(aspects=("2:3",), positions=2, scales=1)
    (roi,) = crop_safe_rois(prob, T, faces=[face], config=config)
    assert roi.safe and _inside(expand_box(face, config.face_margin, W, H), roi.bbox)


def test_everything_blurred_gives_unsafe_rois():
    prob = np.full((H, W), 0.8, np.float32)
    rois = crop_safe_rois(prob, T, faces=[(100, 100, 300, 300)])
    assert len(rois) == 4
    for roi in rois:
        _check_shape(roi, H, W)
        assert not roi.safe and roi.blur_fraction == 1.0
        assert roi.keeps_faces


def test_unsafe_roi_is_the_least_blurred():
    prob = np.full((400, 400), 0.8, np.float32)
    prob[300:, 300:] = 0.1  # only the bottom-right corner is sharp
    (roi,) = crop_safe_rois(prob, T, config=RoiConfig(aspects=("1:1",)))
    assert not roi.safe
    assert roi.bbox == (200, 200, 400, 400)  # the smallest crop, in that corner
    assert roi.blur_fraction == pytest.approx(1 - 100 * 100 / (200 * 200))


def test_roi_blur_fraction_matches_a_direct_count():
    rng = np.random.default_rng(3)
    prob = np.zeros((360, 640), np.float32)
    for _ in range(25):
        y, x = rng.integers(0, 360), rng.integers(0, 640)
        prob[y : y + rng.integers(5, 80), x : x + rng.integers(5, 120)] = rng.uniform(0.3, 1)
    config = RoiConfig(max_blur_fraction=0.02)
    integral = blur_integral(prob >= T)
    for roi in crop_safe_rois(prob, T, config=config):
        x0, y0, x1, y1 = roi.bbox
        direct = np.count_nonzero(prob[y0:y1, x0:x1] >= T) / ((x1 - x0) * (y1 - y0))
        assert roi.blur_fraction == pytest.approx(direct, abs=1e-12)
        assert roi.safe == (direct <= config.max_blur_fraction)
        assert best_crop(integral, roi.aspect, config=config) == roi


def test_with_an_observable_map_the_blur_share_is_a_direct_count_over_observable_pixels():
    """Blur and observable sums come from one two-channel integral: each crop's share must
    be the blurred observable pixels over the observable ones, counted directly."""
    rng = np.random.default_rng(5)
    prob = np.zeros((360, 640), np.float32)
    observable = np.ones((360, 640), bool)
    for _ in range(25):
        y, x = rng.integers(0, 360), rng.integers(0, 640)
        prob[y : y + rng.integers(5, 80), x : x + rng.integers(5, 120)] = rng.uniform(0.3, 1)
        y, x = rng.integers(0, 360), rng.integers(0, 640)
        observable[y : y + rng.integers(20, 150), x : x + rng.integers(20, 200)] = False
    config = RoiConfig(max_blur_fraction=0.02)
    rois = crop_safe_rois(prob, T, config=config, observable=observable, min_observable_fraction=0.05)
    assert rois != crop_safe_rois(prob, T, config=config)  # the map changes the choice here
    for roi in rois:
        x0, y0, x1, y1 = roi.bbox
        seen = observable[y0:y1, x0:x1]
        direct = np.count_nonzero((prob[y0:y1, x0:x1] >= T) & seen) / np.count_nonzero(seen)
        assert roi.blur_fraction == pytest.approx(direct, abs=1e-12)
        assert roi.safe == (direct <= config.max_blur_fraction)


def test_foreground_steers_the_crop():
    prob = np.zeros((H, W), np.float32)
    mask = np.zeros((H, W), bool)
    mask[200:600, 1500:1900] = True
    fg = Foreground(box=(1500, 200, 1900, 600), mask=mask, source="saliency")
    (roi,) = crop_safe_rois(prob, T, foreground=fg, config=RoiConfig(aspects=("1:1",)))
    assert roi.bbox == (840, 0, 1920, 1080)


def test_aspect_parsing_and_config():
    assert parse_aspect("16:9") == pytest.approx(16 / 9)
    assert parse_aspect("2x3") == pytest.approx(2 / 3)
    assert parse_aspect("1.91:1") == pytest.approx(1.91)
    for bad in ("16-9", "0:1", "wide"):
        with pytest.raises(ValueError):
            parse_aspect(bad)
    with pytest.raises(ValidationError):
        RoiConfig(aspects=("16:9", "nope"))
    with pytest.raises(ValidationError):
        RoiConfig(aspects=())
    with pytest.raises(ValueError):
        crop_safe_rois(np.zeros((2, 3, 4), np.float32), T)


def test_tiny_images_still_get_a_crop():
    for shape in ((1, 1), (3, 50), (50, 3)):
        for roi in crop_safe_rois(np.zeros(shape, np.float32), T):
            x0, y0, x1, y1 = roi.bbox
            assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
            assert roi.safe
