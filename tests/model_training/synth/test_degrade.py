"""Hard negatives: each degradation is real, seeded and shape-preserving."""

import numpy as np
import pytest

from model_training.synth.config import NegativeConfig
from model_training.synth.degrade import DEGRADATIONS, Defocus, Jpeg, Noise, Rescale, sample_degradations
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
