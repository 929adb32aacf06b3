"""The scene look: seeded, photometric only, and a veil flattens contrast as light does."""

import json

import numpy as np
import pytest

from model_training.synth.composite import srgb_to_linear
from model_training.synth.config import LookConfig, SynthConfig
from model_training.synth.look import SceneLook, maybe_look


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.1, 0.9, (64, 64, 3)) * 255).astype(np.uint8)


def test_same_seed_same_look():
    img = _texture()
    a, rec_a = maybe_look(img, np.random.default_rng(3), LookConfig(prob=1.0))
    b, rec_b = maybe_look(img, np.random.default_rng(3), LookConfig(prob=1.0))
    np.testing.assert_array_equal(a, b)
    assert rec_a == rec_b and rec_a["type"] == "scene_look"
    json.dumps(rec_a)


def test_no_look_leaves_the_image_alone():
    img = _texture()
    out, rec = maybe_look(img, np.random.default_rng(0), LookConfig(prob=0.0))
    assert rec is None and out is img


def test_a_veil_lowers_contrast_towards_its_airlight():
    img = _texture()
    out = SceneLook(haze=0.5, airlight=0.8, exposure=1.0, cast=(1.0, 1.0, 1.0)).apply(img)
    before, after = srgb_to_linear(img / 255.0), srgb_to_linear(out / 255.0)
    assert after.std() == pytest.approx(0.5 * before.std(), rel=0.05)
    assert after.mean() == pytest.approx(0.5 * before.mean() + 0.5 * 0.8, abs=0.01)


def test_exposure_and_cast_scale_linear_light_per_channel():
    img = np.full((8, 8, 3), 100, np.uint8)
    out = SceneLook(haze=0.0, airlight=0.5, exposure=0.5, cast=(1.2, 1.0, 0.8)).apply(img)
    ratio = srgb_to_linear(out[0, 0] / 255.0) / srgb_to_linear(img[0, 0] / 255.0)
    np.testing.assert_allclose(ratio, [0.6, 0.5, 0.4], rtol=0.03)


def test_the_identity_look_keeps_the_image():
    img = _texture(1)
    out = SceneLook(haze=0.0, airlight=0.5, exposure=1.0, cast=(1.0, 1.0, 1.0)).apply(img)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 1


def test_sampled_looks_stay_in_their_ranges():
    cfg = LookConfig(prob=1.0)
    rng = np.random.default_rng(9)
    for _ in range(200):
        look = SceneLook.sample(rng, cfg)
        assert cfg.haze[0] <= look.haze <= cfg.haze[1]
        assert cfg.exposure[0] <= look.exposure <= cfg.exposure[1]
        assert all(1 - cfg.cast <= c <= 1 + cfg.cast for c in look.cast)


@pytest.mark.parametrize("bad", [dict(haze=(0.5, 0.2)), dict(haze=(0.0, 1.5)), dict(exposure=(0.0, 1.0))])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ValueError):
        LookConfig(**bad)


def test_a_recipe_saved_without_a_look_still_loads(tmp_path):
    f = tmp_path / "old.json"
    data = SynthConfig().model_dump(mode="json")
    del data["look"]
    f.write_text(json.dumps(data))
    assert SynthConfig.load(f).look == LookConfig()
