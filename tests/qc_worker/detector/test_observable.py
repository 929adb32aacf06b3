"""Where blur can be seen at all (qc_worker.detector.observable) and how screening uses it."""

from pathlib import Path

import cv2
import numpy as np

from qc_worker.config import ObservableConfig, Settings
from qc_worker.detector.observable import gradient_energy, observable_map, observable_share
from qc_worker.detector.regions import analyse_regions
from qc_worker.detector.roi import crop_safe_rois
from qc_worker.images import decode_image
from qc_worker.pipeline import analyse_image

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "images"


def _texture(h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = cv2.resize(rng.random((h // 4, w // 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_a_flat_colour_image_has_no_observable_pixel():
    flat = np.full((96, 120, 3), (40, 180, 90), np.uint8)
    assert not observable_map(flat).any()
    assert observable_share(observable_map(flat)) == 0.0


def test_texture_is_observable_and_stays_so_under_motion_blur():
    sharp = _texture()
    k = np.zeros((1, 9), np.float32)
    k[0, :] = 1 / 9
    blurred = cv2.filter2D(sharp, -1, k, borderType=cv2.BORDER_REFLECT_101)
    a, b = observable_map(sharp), observable_map(blurred)
    assert a.mean() > 0.95
    # The rule is read off the image screening is given: a 9 px smear barely changes it.
    assert (a == b).mean() > 0.9


def test_uint8_and_float_inputs_give_the_same_energy():
    img = _texture(64, 64, 3)
    assert np.allclose(gradient_energy(img, 15), gradient_energy(img.astype(np.float32) / 255, 15), atol=1e-6)


def test_the_plain_sky_of_a_sharp_photo_is_not_observable():
    rgb = decode_image(SAMPLES / "rocket.jpg")
    obs = observable_map(rgb)
    h, w = obs.shape
    sky = obs[: h // 8, w // 3 : 2 * w // 3]  # the plain night sky above the rocket
    assert sky.mean() < 0.05
    tower = obs[h // 4 : h // 2, 10:60]  # the lattice of the left tower
    assert tower.mean() > 0.6
    assert 0.2 < obs.mean() < 0.8


def test_a_textureless_area_is_never_a_reason_to_review_or_reject():
    rgb = np.full((120, 160, 3), 200, np.uint8)
    rgb[:, :60] = _texture(120, 60)
    prob = np.zeros((120, 160), np.float32)
    prob[:, 75:] = 0.99  # the model calls the flat part (beyond the texture's edge) blurred
    inten = np.zeros_like(prob)
    obs = observable_map(rgb)
    plain = analyse_regions(prob, inten, 0.5)
    assert plain.verdict == "reject"
    judged = analyse_regions(prob, inten, 0.5, observable=obs, min_observable_fraction=0.02)
    assert judged.verdict == "pass", judged.reasons
    assert judged.blurred_fraction < 0.05
    assert not [r for r in judged.regions if r.kind == "component" and r.area_fraction > 0.05]
    rois = crop_safe_rois(prob, 0.5, observable=obs, min_observable_fraction=0.02)
    assert all(r.safe for r in rois)


def test_shares_are_taken_over_observable_pixels():
    rgb = np.full((100, 100, 3), 128, np.uint8)
    rgb[:, :50] = _texture(100, 50, 1)
    prob = np.zeros((100, 100), np.float32)
    prob[:, :50] = 0.9  # the whole textured half is blurred
    obs = observable_map(rgb)
    report = analyse_regions(prob, np.zeros_like(prob), 0.5, observable=obs, min_observable_fraction=0.02)
    # Half of the image, but (almost) all of what can show blur.
    assert report.blurred_fraction > 0.85
    assert report.verdict == "reject"


def test_screening_of_a_flat_colour_image_passes_whatever_the_maps_say():
    rgb = np.full((80, 80, 3), (10, 20, 200), np.uint8)
    prob = np.ones((80, 80), np.float32)
    settings = Settings(_env_file=None)
    analysis = analyse_image(rgb, prob, prob, 0.5, settings)
    assert analysis.report.verdict == "pass"
    assert not analysis.observable.any()
    assert not [r for r in analysis.report.regions if r.kind == "component"]


def test_the_rule_is_configurable():
    img = _texture(64, 64, 2) // 8 + 100  # low contrast texture
    strict = ObservableConfig(min_gradient=0.05)
    lenient = ObservableConfig(min_gradient=0.001)
    assert observable_map(img, strict).mean() < observable_map(img, lenient).mean()
