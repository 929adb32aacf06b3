"""Training face instances: the worker's detections drawn as ellipses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model_training.synth.masks import FaceBox, FaceDetector
from model_training.synth.masks.faces import TRAINING_FACES
from qc_worker.detector.faces import detect_faces
from tests.model_training.synth.masks.support import assert_valid, iou

SAMPLES = Path(__file__).resolve().parents[4] / "samples" / "images"


def test_face_cascades_load_and_blank_image_has_no_faces():
    detector = FaceDetector()
    assert detector(np.full((240, 320, 3), 200, np.uint8)) == []
    assert detector(np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)) == []


def test_face_mask_is_an_ellipse_around_the_box(monkeypatch):
    detector = FaceDetector()
    # An MTCNN-shaped box: 1.35x as tall as wide.
    monkeypatch.setattr(detector, "_detect", lambda image: [FaceBox(100, 80, 60, 81, 0.9)])
    (face,) = detector(np.zeros((300, 300, 3), np.uint8))
    assert face.kind == "face" and face.score == pytest.approx(0.9)
    assert_valid(face, (300, 300))
    x0, y0, x1, y1 = face.bbox()
    assert y1 - y0 >= 1.1 * 81 and x1 - x0 >= 1.1 * 60, "forehead, chin and ears are inside"
    assert y0 < 80 - 0.1 * 81, "lifted towards the forehead"
    assert face.mask[120, 130] == 255
    assert face.mask[y0, x0] == 0, "corners of the ellipse's box are outside it"


@pytest.mark.parametrize("name", ["portrait_A000069.jpg", "portrait_C001049.jpg", "portrait_E000290.jpg"])
def test_the_ellipse_from_mtcnns_box_is_the_one_tuned_on_haars(name):
    """The ellipse's scales were tuned on Haar boxes; screening's MTCNN boxes are narrower
    and taller, and the scales were refitted so that the face mask stays the same."""
    bgr = cv2.imread(str(SAMPLES / name))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    [haar] = detect_faces(rgb, TRAINING_FACES.model_copy(update={"detector": "haar", "profile": "never"}))
    [mtcnn] = FaceDetector().detect(rgb)
    haar_box = FaceBox(haar[0], haar[1], haar[2] - haar[0], haar[3] - haar[1])
    masks = []
    for centre, axes in (haar_box.ellipse(0.95, 1.25, 0.08), FaceDetector().face_ellipse(mtcnn)):
        mask = np.zeros(rgb.shape[:2], np.uint8)
        masks.append(cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1).astype(bool))
    assert iou(*masks) >= 0.8
