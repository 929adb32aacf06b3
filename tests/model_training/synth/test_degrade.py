"""Hard negatives: each degradation is real, seeded and shape-preserving."""

import json

import cv2
import numpy as np
import pytest

from model_training.synth.config import NegativeConfig
from model_training.synth.degrade import (
    DEGRADATIONS,
    Defocus,
    FilmGrain,
    Jpeg,
    Noise,
    Rescale,
    SharpenHalo,
    SoftLight,
    Upscale,
    portrait_bokeh,
    sample_degradations,
)
from tests.model_training.photos import make_photo


def _sharpness(img: np.ndarray) -> float:
    g = img.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(g, axis=1)).mean())


@pytest.mark.parametrize(
    "op",
    [Defocus(2.0, False, None), Defocus(2.0, True, None), Rescale(0.4, True), Rescale(0.4, False)],
    ids=lambda o: f"{o.name}",
)
def test_softening_degradations_remove_detail(op):
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    out = op.apply(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _sharpness(out) < 0.8 * _sharpness(img)


def test_jpeg_and_noise_change_the_image_and_are_seeded():
    img = make_photo(1)
    assert np.abs(Jpeg(20).apply(img).astype(int) - img).mean() > 1
    a, b = Noise(0.03, 1.0, 5).apply(img), Noise(0.03, 1.0, 5).apply(img)
    assert np.array_equal(a, b) and not np.array_equal(a, img)
    assert Noise(0.03, 0.5, 5).apply(img).mean() < 0.6 * img.mean()


def test_regional_defocus_leaves_part_of_the_frame_sharp():
    img = make_photo(2, size=(240, 240))
    out = Defocus(3.0, False, region_seed=4).apply(img)
    diff = np.abs(out.astype(int) - img).max(axis=2)
    assert (diff == 0).mean() > 0.1 and (diff > 5).mean() > 0.1


def test_sampler_draws_every_kind_and_puts_jpeg_last():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        ops = sample_degradations(rng, NegativeConfig())
        names = [o.name for o in ops]
        seen |= set(names)
        assert len(set(names)) == len(names)
        if "jpeg" in names:
            assert names[-1] == "jpeg"
    assert seen == set(DEGRADATIONS)


def _laplacian_var(img: np.ndarray, where: np.ndarray | None = None) -> float:
    lap = cv2.Laplacian(img.astype(np.float32).mean(axis=2), cv2.CV_32F)
    return float(lap[where].var() if where is not None else lap.var())


NEW_DEGRADATIONS = (FilmGrain, SharpenHalo, SoftLight, Upscale)


@pytest.mark.parametrize("cls", NEW_DEGRADATIONS, ids=lambda c: c.name)
def test_new_degradations_are_registered_seeded_and_shape_preserving(cls):
    assert DEGRADATIONS[cls.name] is cls
    img = make_photo(3)
    for seed in range(4):
        op = cls.sample(np.random.default_rng(seed), NegativeConfig())
        assert op == cls.sample(np.random.default_rng(seed), NegativeConfig())
        json.dumps(op.to_dict())
        a, b = op.apply(img), op.apply(img)
        assert a.shape == img.shape and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert np.abs(a.astype(int) - img).mean() > 0.5


def test_grain_and_halo_add_fine_detail_not_remove_it():
    img = make_photo(4)
    assert _laplacian_var(FilmGrain(0.04, 0.8, True, 1).apply(img)) > 1.2 * _laplacian_var(img)
    assert _laplacian_var(SharpenHalo(1.5, 2.0, 0.0, 1).apply(img)) > 1.2 * _laplacian_var(img)


def test_soft_light_adds_light_but_keeps_edges():
    img = make_photo(5)
    out = SoftLight(0.85, 0.3, 0.05, 0.2, 0.5).apply(img)
    # Lower contrast scales the fine detail down but does not blur it away.
    assert _laplacian_var(out) > 0.4 * _laplacian_var(img)
    edges = np.corrcoef(
        cv2.Laplacian(out.mean(axis=2), cv2.CV_64F).ravel(),
        cv2.Laplacian(img.mean(axis=2), cv2.CV_64F).ravel(),
    )[0, 1]
    assert edges > 0.9


def test_nearest_upscale_is_blocky_and_cubic_is_soft():
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    blocky = Upscale(0.25, "nearest").apply(img)
    assert np.array_equal(blocky, np.repeat(np.repeat(blocky[::4, ::4], 4, axis=0), 4, axis=1))
    assert _sharpness(Upscale(0.25, "lanczos").apply(img)) < 0.8 * _sharpness(img)


def test_heavy_jpeg_share_reaches_the_low_qualities():
    cfg = NegativeConfig(heavy_jpeg_prob=1.0)
    qualities = {Jpeg.sample(np.random.default_rng(i), cfg).quality for i in range(30)}
    assert min(qualities) >= 8 and max(qualities) <= 15
    light = NegativeConfig(heavy_jpeg_prob=0.0)
    assert all(Jpeg.sample(np.random.default_rng(i), light).quality >= 15 for i in range(30))


def _subject(size: tuple[int, int]) -> np.ndarray:
    h, w = size
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, (w // 2, h // 2), (w // 5, h // 3), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), 1.5)


@pytest.mark.parametrize("seed", range(4))
def test_bokeh_keeps_the_subject_and_softens_the_background(seed):
    img = np.random.default_rng(seed).integers(0, 256, (200, 260, 3), dtype=np.uint8)
    subject = _subject(img.shape[:2])
    out, rec = portrait_bokeh(img, subject, np.random.default_rng(seed), NegativeConfig())
    again, rec2 = portrait_bokeh(img, subject, np.random.default_rng(seed), NegativeConfig())
    assert np.array_equal(out, again) and rec == rec2
    json.dumps(rec)
    assert out.shape == img.shape and out.dtype == np.uint8
    core = cv2.erode((subject >= 1.0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert core.sum() > 1000 and np.array_equal(out[core], img[core])
    background = cv2.dilate((subject > 0).astype(np.uint8), np.ones((31, 31), np.uint8)) == 0
    assert _laplacian_var(out, background) < 0.5 * _laplacian_var(img, background)
