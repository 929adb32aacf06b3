"""The six blur types: geometry, energy, and equivalence with explicit exposure integration."""

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from model_training.synth.blur import (
    BLUR_TYPES,
    Curved,
    EdgeRing,
    RandomWalk,
    Rolling,
    Straight,
    ZoomRotation,
    blur_from_dict,
)
from model_training.synth.kernels import (
    effective_extent,
    kernel_from_trajectory,
    line_trajectory,
)


def _principal_axis(weights: np.ndarray) -> tuple[float, float]:
    """(angle in degrees mod 180, effective length sqrt(12 * lambda_max)) of a 2-D mass."""
    ys, xs = np.nonzero(weights > 0)
    w = weights[ys, xs].astype(np.float64)
    w /= w.sum()
    pts = np.stack([xs, ys], 1).astype(np.float64)
    d = pts - (pts * w[:, None]).sum(0)
    cov = (d * w[:, None]).T @ d
    vals, vecs = np.linalg.eigh(cov)
    v = vecs[:, -1]
    return math.degrees(math.atan2(v[1], v[0])) % 180.0, math.sqrt(12 * vals[-1])


@pytest.mark.parametrize("length,angle", [(15.0, 30.0), (9.0, 0.0), (21.0, 135.0), (6.0, 90.0)])
def test_straight_blur_spreads_a_point_into_a_line_of_the_requested_length_and_angle(length, angle):
    layer = np.zeros((65, 65, 4), np.float32)
    layer[32, 32] = 1.0
    out = Straight(length=length, angle=angle).apply(layer).layer[..., 0]
    got_angle, got_length = _principal_axis(out)
    assert abs((got_angle - angle + 90) % 180 - 90) < 2.0
    assert got_length == pytest.approx(length, abs=1.0)
    # The support is a thin line: nothing lies more than ~1 px off its axis.
    ys, xs = np.nonzero(out > 1e-6)
    a = math.radians(angle)
    off_axis = np.abs(-(xs - 32) * math.sin(a) + (ys - 32) * math.cos(a))
    along = np.abs((xs - 32) * math.cos(a) + (ys - 32) * math.sin(a))
    assert off_axis.max() <= 1.5
    assert along.max() <= length / 2 + 1.5
    assert out.sum() == pytest.approx(1.0, rel=1e-4)


def _sample_all(extent=7.0, size=30.0):
    rng = np.random.default_rng(3)
    return [cls.sample(rng, extent, size) for cls in BLUR_TYPES.values()]


@pytest.mark.parametrize("params", _sample_all(), ids=lambda p: p.name)
def test_every_blur_type_preserves_the_energy_of_a_flat_image(params):
    layer = np.full((96, 128, 4), 1.0, np.float32)
    layer[..., :3] = (0.2, 0.5, 0.8)
    out = params.apply(layer).layer
    assert out.sum() == pytest.approx(layer.sum(), rel=0.01)


def _object_energy_cases():
    # A rolling shutter with vertical motion stretches an object vertically (a real effect
    # that changes its area), so it is checked with horizontal motion, where it must not.
    cases = [p for p in _sample_all(extent=5.0, size=20.0) if p.name != "rolling"]
    return cases + [Rolling(5.0, 0.0, row_shift=4.0, wobble=1.0, wobble_period=20.0, phase=0.3)]


@pytest.mark.parametrize("params", _object_energy_cases(), ids=lambda p: p.name)
def test_every_blur_type_preserves_the_energy_of_a_flat_object(params):
    layer = np.zeros((128, 128, 4), np.float32)
    cv2.circle(layer, (64, 64), 20, (0.7, 0.4, 0.1, 1.0), -1)
    out = params.apply(layer).layer
    assert out[..., 3].sum() == pytest.approx(layer[..., 3].sum(), rel=0.01)
    assert not np.allclose(out, layer), "the blur changed nothing"


def test_kernel_equals_averaging_explicitly_warped_copies():
    rng = np.random.default_rng(0)
    img = rng.random((40, 40)).astype(np.float32)
    pts = line_trajectory(7.3, 23.0, n=12)
    k = kernel_from_trajectory(pts)
    via_kernel = cv2.filter2D(img, cv2.CV_32F, k, borderType=cv2.BORDER_CONSTANT)
    # scipy's order-1 shift is exact bilinear interpolation (OpenCV's warp rounds its
    # weights to 1/32 px), so the two must agree to float precision.
    copies = [ndimage.shift(img, (dy, dx), order=1, mode="constant") for dx, dy in pts]
    explicit = np.mean(copies, axis=0)
    inner = (slice(8, 32), slice(8, 32))
    np.testing.assert_allclose(via_kernel[inner], explicit[inner], atol=1e-5)


def test_effective_extent_of_a_line_kernel_is_its_length():
    assert effective_extent(Straight(length=12.0, angle=10.0).kernel()) == pytest.approx(12.0, abs=0.7)


def test_random_walk_is_a_function_of_its_parameters():
    a = RandomWalk(extent=9.0, n_vertices=12, momentum=0.5, seed=7).kernel()
    b = RandomWalk(extent=9.0, n_vertices=12, momentum=0.5, seed=7).kernel()
    c = RandomWalk(extent=9.0, n_vertices=12, momentum=0.5, seed=8).kernel()
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert effective_extent(a) == pytest.approx(9.0, rel=0.15)


def test_curved_blur_bends_away_from_the_chord():
    straight = Straight(length=20.0, angle=0.0).kernel()
    curved = Curved(length=20.0, angle=0.0, bend1=0.5, bend2=0.5).kernel()
    rows = lambda k: np.nonzero(k.sum(1) > 1e-4)[0]
    assert np.ptp(rows(curved)) > np.ptp(rows(straight)) + 3


def test_zoom_smears_more_far_from_its_centre():
    layer = np.zeros((101, 101, 4), np.float32)
    layer[10:91, 10:91] = 1.0
    out = ZoomRotation(zoom=0.15, rotation=0.0, cx=0.5, cy=0.5, max_extent=12.0).apply(layer)
    extent = out.extent
    assert isinstance(extent, np.ndarray)
    assert extent[50, 50] < 0.5
    assert extent[10, 10] > 8.0


def test_edge_ring_is_confined_to_a_band_around_the_boundary():
    layer = np.zeros((120, 120, 4), np.float32)
    cv2.circle(layer, (60, 60), 40, (1, 1, 1, 1), -1)
    out = EdgeRing(length=6.0, angle=0.0, bend1=0.0, bend2=0.0, band=5.0).apply(layer)
    assert out.band is not None
    assert out.band[60, 60] == 0 and out.band[60, 20] == 1 and out.band[5, 5] == 0


def test_rolling_shutter_shears_rows_by_different_offsets():
    layer = np.zeros((80, 80, 4), np.float32)
    layer[20:60, 38:42] = 1.0
    out = Rolling(length=2.0, angle=0.0, row_shift=12.0, wobble=0.0, wobble_period=20.0, phase=0.0)
    res = out.apply(layer).layer[..., 3]
    centre = lambda r: float((np.arange(80) * res[r]).sum() / res[r].sum())
    assert centre(55) - centre(25) == pytest.approx(12.0 * 30 / 39, abs=1.0)


def test_parameters_round_trip_through_their_record():
    for p in _sample_all():
        assert blur_from_dict(p.to_dict()) == p
