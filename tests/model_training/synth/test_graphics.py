"""Generated graphic art: seeded, sharp, and every drawn element is a usable instance."""

import json

import cv2
import numpy as np
import pytest

from model_training.synth.config import GraphicsConfig, SynthConfig
from model_training.synth.graphics import overlay_graphics, render_graphic
from tests.model_training.photos import make_photo

SIZES = [(128, 96), (64, 64), (96, 160)]


def _max_laplacian(img: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(img.astype(np.float32).mean(axis=2), cv2.CV_32F)).max())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("seed", range(6))
def test_render_graphic_is_seeded_and_well_formed(seed, size):
    cfg = GraphicsConfig()
    img, instances, rec = render_graphic(np.random.default_rng(seed), size, cfg)
    again, instances2, rec2 = render_graphic(np.random.default_rng(seed), size, cfg)
    assert img.tobytes() == again.tobytes() and rec == rec2
    assert [i.mask.tobytes() for i in instances] == [i.mask.tobytes() for i in instances2]
    w, h = size
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert 1 <= len(instances) <= cfg.elements[1]
    for inst in instances:
        assert inst.mask.shape == (h, w) and inst.mask.dtype == np.uint8
        assert set(np.unique(inst.mask)) <= {0, 255} and inst.area > 0
        assert inst.kind in cfg.kind_weights
    json.dumps(rec)
    assert sum(e["instance"] for e in rec["elements"]) == len(instances)
    # Vector-sharp edges: a step of most of the full range within a pixel or two.
    assert _max_laplacian(img) > 60


def test_every_element_kind_and_background_occurs():
    kinds, backgrounds = set(), set()
    for seed in range(30):
        _, instances, rec = render_graphic(np.random.default_rng(seed), (128, 96), GraphicsConfig())
        kinds |= {i.kind for i in instances}
        backgrounds.add(rec["background"]["kind"])
    assert kinds == {"text", "shape", "logo", "drawn"}
    assert backgrounds == {"flat", "linear", "radial", "noise"}


def test_instances_are_visible_footprints_of_their_elements():
    cfg = GraphicsConfig(elements=(6, 6), kind_weights={"shape": 1.0})
    for seed in range(5):
        img, instances, _ = render_graphic(np.random.default_rng(seed), (128, 96), cfg)
        # Each element is drawn over the earlier ones, so its mask is mostly its own.
        masks = np.stack([i.mask > 0 for i in instances])
        assert (masks.sum(axis=0) > 1).mean() < 0.05


@pytest.mark.parametrize("size", [(96, 128), (64, 64), (160, 90)], ids=str)
@pytest.mark.parametrize("seed", range(6))
def test_overlay_changes_only_pixels_near_its_instances(seed, size):
    photo = make_photo(seed, size=size)
    cfg = GraphicsConfig(overlay_logo_prob=0.5)
    out, instances, rec = overlay_graphics(photo, np.random.default_rng(seed), cfg)
    again, _, rec2 = overlay_graphics(photo, np.random.default_rng(seed), cfg)
    assert out.tobytes() == again.tobytes() and rec == rec2
    json.dumps(rec)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert instances and all(i.area > 0 for i in instances)
    assert instances[0].kind == "text" and {i.kind for i in instances} <= {"text", "logo"}
    near = np.zeros(size, np.uint8)
    for inst in instances:
        near |= inst.mask
    near = cv2.dilate(near, np.ones((5, 5), np.uint8)) > 0
    changed = np.abs(out.astype(int) - photo).max(axis=2) > 0
    assert changed.any() and not (changed & ~near).any()


def test_graphics_config_defaults_and_validation():
    cfg = SynthConfig()
    assert cfg.graphics.prob == 0.15 and cfg.graphics.overlay_prob == 0.15
    assert SynthConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError):
        GraphicsConfig(elements=(3, 1))
    with pytest.raises(ValueError):
        GraphicsConfig(kind_weights={"text": 0.0})
