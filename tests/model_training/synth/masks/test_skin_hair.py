"""Skin and hair are found inside the foreground, hair only where it touches a face."""

from __future__ import annotations

import numpy as np

from model_training.synth.masks import FaceBox, FaceDetector, SkinHair
from tests.model_training.synth.masks.support import SKIN_RGB, assert_valid, iou, square_mask


def test_skin_found_inside_foreground_only():
    image = np.full((200, 300, 3), 90, np.uint8)
    image[40:100, 40:100] = SKIN_RGB
    image[120:180, 200:260] = SKIN_RGB
    foreground = np.zeros((200, 300), bool)
    foreground[20:120, 20:120] = True
    instances = SkinHair()(image, foreground_mask=foreground)
    skin = [i for i in instances if i.kind == "skin"]
    assert len(skin) == 1
    assert_valid(skin[0], (200, 300))
    assert iou(skin[0].mask, square_mask((200, 300), 40, 100, 40, 100)) > 0.9


def test_hair_is_the_dark_band_above_a_face(monkeypatch):
    image = np.full((300, 300, 3), (120, 160, 200), np.uint8)
    image[90:210, 110:190] = SKIN_RGB
    image[50:100, 100:200] = (40, 30, 25)
    image[170:190, 90:98] = (40, 30, 25)  # dark, in the band, but not touching the face
    faces = FaceDetector()
    monkeypatch.setattr(faces, "_detect", lambda img: [FaceBox(110, 100, 80, 100, 1.0)])
    foreground = np.zeros((300, 300), bool)
    foreground[40:260, 80:220] = True
    instances = SkinHair(faces=faces)(image, foreground_mask=foreground)
    (hair,) = [i for i in instances if i.kind == "hair"]
    assert_valid(hair, (300, 300))
    ys, xs = np.nonzero(hair.mask)
    assert ys.max() < 110, "hair stays above the face"
    assert np.all(image[ys, xs] == (40, 30, 25))
    assert hair.area > 0.3 * 50 * 100
