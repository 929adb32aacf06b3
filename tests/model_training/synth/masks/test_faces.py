"""Training face instances: the worker's detections drawn as ellipses."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.synth.masks import FaceBox, FaceDetector
from tests.model_training.synth.masks.support import assert_valid


def test_face_cascades_load_and_blank_image_has_no_faces():
    detector = FaceDetector()
    assert detector(np.full((240, 320, 3), 200, np.uint8)) == []
    assert detector(np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)) == []


def test_face_mask_is_an_ellipse_taller_than_the_box(monkeypatch):
    detector = FaceDetector()
    monkeypatch.setattr(detector, "_detect", lambda image: [FaceBox(100, 80, 60, 60, 0.9)])
    (face,) = detector(np.zeros((300, 300, 3), np.uint8))
    assert face.kind == "face" and face.score == pytest.approx(0.9)
    assert_valid(face, (300, 300))
    x0, y0, x1, y1 = face.bbox()
    assert y1 - y0 >= 1.2 * 60 and x1 - x0 <= 60
    assert face.mask[110, 130] == 255
    assert face.mask[y0, x0] == 0, "corners of the box are outside the ellipse"
