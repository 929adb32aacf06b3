"""Coverage modes, curriculum and mixing when blurring the instances of one image."""

import cv2
import numpy as np

from model_training.synth.config import CURRICULUM, SynthConfig
from model_training.synth.generate import blur_instances, pick_blur_type
from model_training.synth.instances import Instance
from tests.model_training.photos import make_photo


def _instances(shape):
    h, w = shape
    a = np.zeros((h, w), np.uint8)
    cv2.circle(a, (w // 3, h // 2), 40, 255, -1)
    b = np.zeros((h, w), np.uint8)
    cv2.rectangle(b, (2 * w // 3 - 30, h // 2 - 30), (2 * w // 3 + 30, h // 2 + 30), 255, -1)
    return [Instance(a, "foreground"), Instance(b, "face")]


def test_sharp_coverage_leaves_the_image_byte_identical_and_the_mask_empty():
    img = make_photo(1)
    out = blur_instances(
        img,
        _instances(img.shape[:2]),
        np.random.default_rng(0),
        SynthConfig(),
        coverages=["sharp", "sharp"],
    )
    assert out.image.tobytes() == img.tobytes()
    assert not out.label.any() and not out.extent_px.any()
    assert [r["coverage"] for r in out.record["instances"]] == ["sharp", "sharp"]


def test_full_coverage_labels_the_instance_and_only_near_it():
    img = make_photo(2)
    inst = _instances(img.shape[:2])
    out = blur_instances(img, inst, np.random.default_rng(1), SynthConfig(stage=1), coverages=["full", "sharp"])
    assert out.label[inst[0].mask > 0].mean() > 0.95
    assert not out.label[inst[1].mask > 0].any()
    diff = np.abs(out.image.astype(int) - img.astype(int)).max(axis=2)
    assert diff[inst[1].mask > 0].max() == 0


def test_curriculum_stages_restrict_blur_types_and_mixing():
    rng = np.random.default_rng(0)
    for stage, allowed in CURRICULUM.items():
        cfg = SynthConfig(stage=stage)
        drawn = {pick_blur_type(rng, cfg) for _ in range(300)}
        assert drawn == set(allowed)
    img = make_photo(3)
    types = set()
    for seed in range(8):
        out = blur_instances(
            img,
            _instances(img.shape[:2]),
            np.random.default_rng(seed),
            SynthConfig(stage=2),
            coverages=["full", "full"],
        )
        recs = out.record["instances"]
        assert recs[0]["blur"]["type"] == recs[1]["blur"]["type"], "stage 2 must not mix types in one image"
        types |= {r["blur"]["type"] for r in recs}
    assert types <= set(CURRICULUM[2])
    mixed = 0
    for seed in range(12):
        out = blur_instances(
            img,
            _instances(img.shape[:2]),
            np.random.default_rng(seed),
            SynthConfig(stage=3),
            coverages=["full", "full"],
        )
        recs = out.record["instances"]
        mixed += recs[0]["blur"]["type"] != recs[1]["blur"]["type"]
    assert mixed > 0, "stage 3 never mixed blur types within an image"
