"""The worker's face detector and salient-foreground box (qc_worker.detector.faces)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from qc_worker.detector.boxes import box_iou, clip_box, expand_box, union_box
from qc_worker.detector.faces import (
    FaceConfig,
    FaceDetectorError,
    Foreground,
    detect_faces,
    load_cascades,
    salient_foreground,
)

PORTRAIT = Path(__file__).resolve().parents[3] / "samples" / "images" / "portrait_A000069.jpg"


def _portrait() -> np.ndarray:
    if not PORTRAIT.exists():
        pytest.skip(f"{PORTRAIT} is not there")
    bgr = cv2.imread(str(PORTRAIT))
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_cascades_load_and_a_blank_image_has_no_faces():
    load_cascades()
    assert detect_faces(np.zeros((480, 640, 3), np.uint8)) == []
    assert detect_faces(np.full((1080, 1920, 3), 200, np.uint8)) == []
    assert detect_faces(np.zeros((480, 640), np.uint8)) == []  # grey is accepted too


def test_bad_input_is_refused():
    with pytest.raises(FaceDetectorError):
        detect_faces(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(FaceDetectorError):
        detect_faces(np.zeros((10, 10, 2), np.uint8))


def test_a_face_is_found_in_the_upper_part_of_the_portrait():
    image = _portrait()
    height, width = image.shape[:2]
    faces = detect_faces(image)
    assert faces, "no face found in the sample portrait"
    x0, y0, x1, y1 = faces[0]
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert y0 < height / 2  # the face starts in the upper half ...
    assert (y0 + y1) / 2 < 0.6 * height  # ... and is centred no lower than just below it
    assert (x1 - x0) * (y1 - y0) >= 0.1 * width * height


def test_boxes_come_back_in_the_pixels_of_a_large_image():
    image = _portrait()
    small = detect_faces(image)
    big_image = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    assert max(big_image.shape[:2]) > FaceConfig().max_side  # so it is downscaled inside
    big = detect_faces(big_image)
    assert small and big
    expected = tuple(3 * v for v in small[0])
    assert box_iou(big[0], expected) > 0.8


def test_profile_modes_are_all_accepted():
    image = _portrait()
    for mode in ("always", "fallback", "never"):
        assert detect_faces(image, FaceConfig(profile=mode))
    with pytest.raises(ValueError):
        FaceConfig(profile="sometimes")


def test_box_helpers():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert clip_box((-5, -5, 50.4, 8), 40, 30) == (0, 0, 40, 8)
    assert expand_box((10, 10, 20, 30), 0.5, 100, 100) == (5, 0, 25, 40)
    assert union_box([(10, 10, 20, 20), (0, 15, 5, 40), (3, 3, 3, 3)]) == (0, 10, 20, 40)
    assert union_box([]) is None


def test_foreground_of_a_blank_image_is_none_unless_there_are_faces():
    blank = np.zeros((300, 400, 3), np.uint8)
    assert salient_foreground(blank) is None
    fg = salient_foreground(blank, faces=[(10, 20, 60, 80), (200, 100, 250, 150)])
    assert isinstance(fg, Foreground)
    assert fg.source == "faces"
    assert fg.box == (10, 20, 250, 150)
    assert fg.mask.shape == (300, 400)
    assert fg.mask.sum() == 50 * 60 + 50 * 50


def test_foreground_finds_a_lone_object():
    image = np.full((540, 960, 3), 40, np.uint8)
    square = (600, 200, 760, 330)
    image[square[1] : square[3], square[0] : square[2]] = (220, 180, 60)
    fg = salient_foreground(image)
    assert fg is not None and fg.source == "saliency"
    x0, y0, x1, y1 = fg.box
    outer = expand_box(square, 0.75, 960, 540)
    assert outer[0] <= x0 and outer[1] <= y0 and x1 <= outer[2] and y1 <= outer[3]
    assert x0 <= 680 <= x1 and y0 <= 265 <= y1  # holds the square's centre
    assert fg.mask[265, 680] and not fg.mask[50, 50]
    with_face = salient_foreground(image, faces=[(20, 20, 80, 90)])
    assert with_face.source == "saliency+faces"
    assert with_face.box[:2] == (20, 20) and with_face.box[2:] == fg.box[2:]


def test_profile_duplicates_of_frontal_faces_are_dropped(monkeypatch):
    """Frontal boxes are kept first; a profile box overlapping one is a duplicate, a
    separate profile face is kept, and mirrored profile boxes come back unmirrored."""
    from qc_worker.config import FaceConfig
    from qc_worker.detector import faces as faces_module

    def fake_detect(self, gray, config, min_side):
        if self is faces_module._cascade(faces_module.FRONTAL_CASCADE):
            return [(50, 50, 90, 90)]
        if gray[0, 0] == 1:  # the mirrored pass (marker pixel moved to the left edge)
            return [(400 - 190, 50, 400 - 150, 90)]
        return [(54, 52, 94, 92), (250, 40, 290, 80)]

    monkeypatch.setattr(faces_module._Cascade, "detect", fake_detect)
    monkeypatch.setattr(faces_module.cv2, "equalizeHist", lambda g: g)
    image = np.zeros((200, 400, 3), np.uint8)
    image[0, -1] = 1
    boxes = faces_module.detect_faces(
        image, FaceConfig(detector="haar", max_side=10_000, profile="always", min_size_fraction=0.05)
    )
    assert (50, 50, 90, 90) in boxes
    assert (54, 52, 94, 92) not in boxes
    assert (250, 40, 290, 80) in boxes and (150, 50, 190, 90) in boxes
    assert len(boxes) == 3
