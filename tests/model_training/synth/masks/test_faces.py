"""Face detection draws ellipses and drops duplicate detections."""

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
    monkeypatch.setattr(
        detector, "_detect", lambda image: [FaceBox(100, 80, 60, 60, 0.9, profile=False)]
    )
    (face,) = detector(np.zeros((300, 300, 3), np.uint8))
    assert face.kind == "face" and face.score == pytest.approx(0.9)
    assert_valid(face, (300, 300))
    x0, y0, x1, y1 = face.bbox()
    assert y1 - y0 >= 1.2 * 60 and x1 - x0 <= 60
    assert face.mask[110, 130] == 255
    assert face.mask[y0, x0] == 0, "corners of the box are outside the ellipse"


def test_profile_duplicates_of_frontal_faces_are_dropped(monkeypatch):
    def fake_run(self, cascade_file, gray, min_side, profile):
        if not profile:
            return [FaceBox(50, 50, 40, 40, 0.8, profile=False)]
        return [FaceBox(54, 52, 40, 40, 0.9, profile=True), FaceBox(150, 50, 40, 40, 0.7, True)]

    monkeypatch.setattr(FaceDetector, "_run", fake_run)
    faces = FaceDetector(max_side=10_000)._detect(np.zeros((200, 400, 3), np.uint8))
    boxes = sorted((f.x, f.profile) for f in faces)
    # The mirrored profile pass also reports the two profile boxes, flipped.
    assert (50, False) in boxes and (54, True) not in boxes
    assert (150, True) in boxes
    assert len(faces) == len({(f.x, f.y) for f in faces})
