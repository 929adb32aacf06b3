"""Whole-frame camera motion: reproducible, energy-preserving, honest extents and labels."""

import json
import math

import numpy as np
import pytest

from model_training.synth.camera import (
    CAMERA_KINDS,
    FrameAverage,
    Pan,
    Shake,
    SubjectCamera,
    Sweep,
    camera_motion,
    pick_camera_kind,
)
from model_training.synth.composite import srgb_to_linear
from model_training.synth.config import CAMERA_CURRICULUM, CameraConfig, SynthConfig
from model_training.synth.kernels import effective_extent, kernel_from_trajectory, shake_trajectory

KINDS = tuple(CAMERA_KINDS)
SIZE = 96


def _texture(seed: int = 0) -> np.ndarray:
    """Smooth-ish noise plus a checkerboard: texture everywhere, so every blur is visible."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.2, 0.8, (SIZE, SIZE, 3))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    checker = ((yy // 6 + xx // 6) % 2)[..., None] * 0.3
    return np.clip(np.round((0.6 * noise + checker) * 255), 0, 255).astype(np.uint8)


def _subject() -> np.ndarray:
    sub = np.zeros((SIZE, SIZE), np.float32)
    sub[30:66, 34:62] = 1.0
    return sub


def _only(kind: str, **kw) -> CameraConfig:
    return CameraConfig(kind_weights={kind: 1.0}, **kw)


def _params(kind: str, extent: float = 6.0):
    rng = np.random.default_rng(11)
    if kind in ("shake", "sweep"):
        return CAMERA_KINDS[kind].sample(rng, extent)
    if kind == "frame_average":
        return FrameAverage.sample(rng, extent, CameraConfig())
    return CAMERA_KINDS[kind].sample(rng, extent, 1.0)


def test_shake_trajectory_is_a_function_of_its_parameters():
    kw = dict(anxiety=0.08, jitter=5.0, centripetal=0.4, jerk_prob=0.2, exposure=0.7)
    a = shake_trajectory(9.0, 80, 3, **kw)
    b = shake_trajectory(9.0, 80, 3, **kw)
    c = shake_trajectory(9.0, 80, 4, **kw)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    # Consecutive samples stay under half a pixel apart, so the PSF has no gaps.
    assert np.linalg.norm(np.diff(a, axis=0), axis=1).max() < 0.5


@pytest.mark.parametrize("extent", [6.0, 12.0, 24.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shake_psf_has_the_requested_effective_extent(extent, seed):
    params = Shake.sample(np.random.default_rng(seed), extent)
    k = params.kernel()
    assert k.sum() == pytest.approx(1.0, rel=1e-4)
    assert effective_extent(k) == pytest.approx(extent, rel=0.1)


def test_a_calm_shake_drifts_and_an_anxious_one_tangles():
    def straightness(anxiety: float) -> float:
        k = kernel_from_trajectory(
            shake_trajectory(
                15.0,
                120,
                5,
                anxiety=anxiety,
                jitter=8.0,
                centripetal=0.5,
                jerk_prob=0.2,
                exposure=1.0,
            )
        )
        ys, xs = np.nonzero(k > 0)
        w = k[ys, xs] / k.sum()
        pts = np.stack([xs, ys], 1).astype(np.float64)
        d = pts - (pts * w[:, None]).sum(0)
        lo, hi = np.linalg.eigvalsh((d * w[:, None]).T @ d)
        return hi / max(lo, 1e-9)

    assert straightness(0.001) > 3 * straightness(0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output(kind):
    img, sub, cfg = _texture(), _subject(), _only(kind)
    a = camera_motion(img, sub, np.random.default_rng(7), cfg, 3)
    b = camera_motion(img, sub, np.random.default_rng(7), cfg, 3)
    c = camera_motion(img, sub, np.random.default_rng(8), cfg, 3)
    assert a.image.tobytes() == b.image.tobytes()
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.extent_px, b.extent_px)
    assert a.record == b.record
    assert a.record != c.record


@pytest.mark.parametrize("kind", KINDS)
def test_a_flat_frame_stays_flat(kind):
    lin = np.empty((SIZE, SIZE, 3), np.float32)
    lin[...] = (0.2, 0.5, 0.8)
    out = _params(kind).apply(lin, _subject())
    np.testing.assert_allclose(out.image, lin, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_mean_brightness_is_kept_in_linear_light(kind):
    img = _texture(1)
    res = camera_motion(img, _subject(), np.random.default_rng(3), _only(kind), 3)
    assert res.record["camera"]["visible"]
    inner = (slice(16, -16), slice(16, -16))
    before = srgb_to_linear(img[inner] / 255.0).mean()
    after = srgb_to_linear(res.image[inner] / 255.0).mean()
    assert abs(after - before) * 255 < 1.0


@pytest.mark.parametrize("kind", ["shake", "sweep", "subject_camera", "frame_average"])
def test_whole_frame_kinds_label_the_whole_frame(kind):
    res = camera_motion(_texture(), _subject(), np.random.default_rng(4), _only(kind), 3)
    assert res.label.all()
    assert (res.extent_px > 0).all()
    assert res.image.dtype == np.uint8 and res.extent_px.dtype == np.float32


def test_a_pan_keeps_the_subject_sharp_and_labels_only_the_background():
    img, sub = _texture(), _subject()
    res = camera_motion(img, sub, np.random.default_rng(5), _only("pan"), 3)
    core = np.zeros_like(sub, bool)
    core[33:63, 37:59] = True
    assert not res.label[sub >= 0.5].any()
    np.testing.assert_array_equal(res.image[core], img[core])
    far = sub == 0
    far[28:68, 32:64] = False
    assert res.label[far].all()
    assert (res.extent_px[~res.label] == 0).all()


def test_subject_and_camera_extents_differ_per_pixel():
    params = SubjectCamera(
        camera=Shake(4.0, 80, 0.01, 1.0, 0.1, 0.0, 1.0, 1),
        own_length=14.0,
        own_angle=0.0,
        feather_px=1.0,
    )
    out = params.apply(srgb_to_linear(_texture() / 255.0), _subject())
    assert out.extent[48, 48] > 10.0
    assert out.extent[5, 5] == pytest.approx(4.0, rel=0.15)


def test_frame_average_moves_the_background_less_than_the_subject():
    params = FrameAverage(path=Shake(12.0, 80, 0.01, 1.0, 0.1, 0.0, 1.0, 2), frames=7, parallax=0.4, feather_px=1.0)
    out = params.apply(srgb_to_linear(_texture() / 255.0), _subject())
    assert out.extent[48, 48] == pytest.approx(12.0, rel=0.1)
    assert out.extent[5, 5] == pytest.approx(0.4 * 12.0, rel=0.15)


def test_a_dot_spreads_over_the_recorded_extent():
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[8::20, 8::20] = 255  # a lattice, so enough of the frame visibly changes
    res = camera_motion(img, None, np.random.default_rng(2), _only("shake", mild_px=(7.0, 7.0), strong_prob=0.0), 1)
    assert res.record["camera"]["visible"]
    patch = srgb_to_linear(res.image[38:59, 38:59, 0] / 255.0)  # around the dot at (48, 48)
    assert effective_extent(patch) == pytest.approx(float(res.extent_px[48, 48]), rel=0.15)
    assert float(res.extent_px[48, 48]) == pytest.approx(7.0, rel=0.1)


def test_stage_one_only_convolves_and_stage_two_never_averages_frames():
    cfg = CameraConfig()
    rng = np.random.default_rng(0)
    assert {pick_camera_kind(rng, cfg, 1) for _ in range(200)} == {"shake", "sweep"}
    assert {pick_camera_kind(rng, cfg, 2) for _ in range(300)} == set(CAMERA_CURRICULUM[2])
    assert "frame_average" not in CAMERA_CURRICULUM[2]
    assert {pick_camera_kind(rng, cfg, 3) for _ in range(300)} == set(KINDS)
    for seed in range(5):
        res = camera_motion(_texture(), _subject(), np.random.default_rng(seed), cfg, 1)
        assert res.record["camera"]["kind"] in ("shake", "sweep")


@pytest.mark.parametrize("subject", [None, np.zeros((SIZE, SIZE), np.float32)], ids=["none", "empty"])
def test_a_pan_without_a_subject_becomes_a_shake(subject):
    res = camera_motion(_texture(), subject, np.random.default_rng(1), _only("pan"), 2)
    assert res.record["camera"]["kind"] == "shake"
    assert res.record["camera"]["fallback_from"] == "pan"
    assert res.label.all()


def test_an_invisible_change_returns_the_sharp_frame_unlabelled():
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    res = camera_motion(img, _subject(), np.random.default_rng(0), CameraConfig(), 3)
    assert res.record["camera"]["visible"] is False
    np.testing.assert_array_equal(res.image, img)
    assert not res.label.any() and not res.extent_px.any()


@pytest.mark.parametrize("kind", KINDS)
def test_the_record_is_json(kind):
    res = camera_motion(_texture(), _subject(), np.random.default_rng(6), _only(kind), 3)
    rec = json.loads(json.dumps(res.record))
    assert rec["camera"]["params"]["type"] == kind
    assert math.isfinite(rec["camera"]["visible_fraction"])


def test_a_recipe_saved_without_camera_settings_still_loads(tmp_path):
    f = tmp_path / "old.json"
    dumped = SynthConfig().model_dump(mode="json")
    dumped.pop("camera")
    f.write_text(json.dumps(dumped))
    assert SynthConfig.load(f).camera == CameraConfig()
    with pytest.raises(ValueError, match="frames"):
        CameraConfig(frames=(1, 4))


def test_pan_streaks_along_its_angle():
    k = Pan(length=12.0, angle=0.0, bend=0.0, feather_px=1.0).kernel()
    rows = np.nonzero(k.sum(1) > 1e-4)[0]
    cols = np.nonzero(k.sum(0) > 1e-4)[0]
    assert np.ptp(cols) >= 11 and np.ptp(rows) <= 1


def test_a_sweep_streaks_along_one_line_of_its_length():
    k = Sweep(length=10.0, angle=90.0, bend=0.0).kernel()
    rows = np.nonzero(k.sum(1) > 1e-4)[0]
    cols = np.nonzero(k.sum(0) > 1e-4)[0]
    assert np.ptp(rows) >= 9 and np.ptp(cols) <= 1
    assert effective_extent(k) == pytest.approx(10.0, rel=0.15)


def test_most_sweeps_are_nearly_horizontal():
    rng = np.random.default_rng(3)
    angles = np.array([Sweep.sample(rng, 6.0).angle for _ in range(2000)])
    off = np.minimum(angles, 180.0 - angles)
    share = float((off <= Sweep.HORIZONTAL_SPREAD).mean())
    uniform_share = 2 * Sweep.HORIZONTAL_SPREAD / 180.0
    expected = Sweep.HORIZONTAL_PROB + (1 - Sweep.HORIZONTAL_PROB) * uniform_share
    assert share == pytest.approx(expected, abs=0.04)
    assert ((angles >= 0) & (angles < 180)).all()
