"""Screening's default face detector (MTCNN) on faces made hard on purpose, on face-free
images, its confidence, the missing-package error, and training's use of the same detector."""

import pickle
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model_training.synth.masks.faces import TRAINING_FACES, FaceDetector
from qc_worker.config import FaceConfig, RegionConfig
from qc_worker.detector import mtcnn
from qc_worker.detector.boxes import box_iou, integral_image
from qc_worker.detector.faces import Face, FaceDetectorError, detect_faces, load_face_detector
from qc_worker.detector.regions import analyse_regions
from qc_worker.vocabulary import Verdict
from tests.qc_worker.hard_faces import KINDS, busy_texture, make_case

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "images"


def _rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(SAMPLES / name))
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A sample portrait and its face box by the Haar frontal cascade (not the network's own)."""
    rgb = _rgb("portrait_A000069.jpg")
    [face] = detect_faces(rgb, FaceConfig(detector="haar", profile="never"))
    return rgb, tuple(face)


def test_the_default_detector_is_the_network():
    assert FaceConfig().detector == "mtcnn"


def test_p_nets_pyramid_levels_are_the_configured_factor_apart(portrait, monkeypatch):
    rgb, face = portrait
    nets = mtcnn._nets()
    sides: list[int] = []
    forward = nets._pnet
    monkeypatch.setattr(nets, "_pnet", lambda x: sides.append(x.shape[-2]) or forward(x))
    levels = {}
    for factor in (0.6, mtcnn.FACENET_PYRAMID_FACTOR):
        sides.clear()
        faces = detect_faces(rgb, FaceConfig(pyramid_factor=factor))
        assert any(box_iou(f, face) >= 0.5 for f in faces), factor
        levels[factor] = list(sides)
        ratios = np.array(sides[1:]) / np.array(sides[:-1])
        np.testing.assert_allclose(ratios, factor, atol=0.06)
    assert len(levels[0.6]) < len(levels[mtcnn.FACENET_PYRAMID_FACTOR])


def test_p_nets_merged_heads_give_facenet_pytorchs_outputs(portrait):
    """Screening computes P-Net's two heads as one matrix product; the offsets and the face
    probabilities must be P-Net's own."""
    nets = mtcnn._nets()
    level = cv2.resize(portrait[0], (173, 131), interpolation=cv2.INTER_LINEAR)
    x = mtcnn._tensor(level[None])
    with torch.inference_mode():
        reg, probs = nets._pnet(x)
        their_reg, their_probs = nets.pnet(x)
    assert reg.shape == their_reg.shape and probs.shape == their_probs.shape
    torch.testing.assert_close(reg, their_reg, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, their_probs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_each_hard_kind_of_face_is_found(portrait, kind):
    rgb, face = portrait
    rng = np.random.default_rng(7)
    image, truth = make_case(rgb, face, kind, _rgb("coffee.jpg"), rng)
    faces = detect_faces(image)
    assert any(box_iou(f, truth) >= 0.3 for f in faces), f"{kind}: {faces} vs truth {truth}"
    assert all(f.confidence >= FaceConfig().min_confidence for f in faces)


@pytest.mark.parametrize(
    "name",
    [
        "portrait_A000069.jpg",
        "portrait_C001049.jpg",
        "portrait_E000290.jpg",
        "astronaut.jpg",
    ],
)
def test_the_cascade_finds_what_facenet_pytorchs_own_driver_finds(name):
    """Screening drives P-, R- and O-Net itself (faster resizing, channels-last nets); the
    faces must stay facenet-pytorch's: same count, boxes within IoU 0.8, close probabilities."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    from facenet_pytorch.models.utils.detect_face import detect_face

    rgb = _rgb(name)
    rgb = cv2.resize(rgb, None, fx=640 / max(rgb.shape[:2]), fy=640 / max(rgb.shape[:2]), interpolation=cv2.INTER_AREA)
    min_face = 22
    with torch.inference_mode():
        batch, _ = detect_face(
            rgb.copy(),
            min_face,
            PNet().eval(),
            RNet().eval(),
            ONet().eval(),
            list(mtcnn.STAGE_THRESHOLDS),
            mtcnn.FACENET_PYRAMID_FACTOR,
            torch.device("cpu"),
        )
    theirs = [f for f in np.asarray(batch[0], dtype=np.float64).reshape(-1, 5) if f[4] >= 0.9]
    ours = [(box, p) for box, p in mtcnn.detect(rgb, min_face, mtcnn.FACENET_PYRAMID_FACTOR) if p >= 0.9]
    assert len(ours) == len(theirs) >= 1
    for box, p in ours:
        best = max(theirs, key=lambda t: box_iou(box, tuple(t[:4])))
        assert box_iou(box, tuple(best[:4])) >= 0.8
        assert abs(p - best[4]) < 0.02


def test_threads_detecting_at_once_find_what_one_at_a_time_finds(portrait):
    """Screening analyses a batch's images on several threads and the cascade holds no lock:
    faces found concurrently must be the very faces (boxes and probabilities, bit for bit)
    found one image at a time."""
    rgb, face = portrait
    rng = np.random.default_rng(3)
    images = [_rgb(n) for n in ("portrait_C001049.jpg", "portrait_E000290.jpg", "astronaut.jpg")]
    images += [make_case(rgb, face, kind, _rgb("coffee.jpg"), rng)[0] for kind in ("rotated_30", "dark", "blurred")]
    images = [cv2.resize(im, None, fx=640 / max(im.shape), fy=640 / max(im.shape)) for im in images]
    alone = [mtcnn.detect(im, 22, 0.6) for im in images]
    assert all(alone)
    start = threading.Barrier(4)

    def run(offset: int) -> list:
        start.wait()
        n = len(images)  # each thread meets the images twice, starting at another one
        found = {i: mtcnn.detect(images[i], 22, 0.6) for i in ((offset + k) % n for k in range(2 * n))}
        return [found[i] for i in range(n)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    for together in results:
        assert together == alone


def _random_squares(rng: np.random.Generator, n: int, min_side: float) -> torch.Tensor:
    """``n`` candidate squares (x0, y0, x1, y1, score) around a 120 x 90 image, some reaching
    past its edges and some wholly outside, as P-Net hands them to the crops."""
    x0, y0 = rng.uniform(-20, 100, n), rng.uniform(-20, 70, n)
    side = rng.uniform(min_side, 60, n)
    return torch.tensor(np.stack([x0, y0, x0 + side, y0 + side, np.ones(n)], axis=1), dtype=torch.float32)


def test_crops_from_the_int32_integral_are_those_of_the_float64_one():
    """O- and R-Net crops are read from an int32 integral where no sum can overflow it."""
    from facenet_pytorch.models.utils import detect_face

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = _random_squares(rng, 40, min_side=2)
    narrow, wide = integral_image(rgb), cv2.integral(rgb, sdepth=cv2.CV_64F)
    assert narrow.dtype == np.int32
    for size in (24, 48):
        torch.testing.assert_close(
            mtcnn._crops(narrow, boxes, size, detect_face),
            mtcnn._crops(wide, boxes, size, detect_face),
            rtol=0,
            atol=0,
        )


def test_crops_are_facenet_pytorchs_area_resized_crops():
    """Each crop is what facenet-pytorch's detect_face feeds R- and O-Net: the box's pixels
    (clipped by its ``pad``) resized by ``interpolate(mode="area")``, then normalised."""
    from facenet_pytorch.models.utils import detect_face

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = _random_squares(rng, 30, min_side=4)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float()
    y, ey, x, ex = detect_face.pad(boxes.clone(), 120, 90)
    for size in (24, 48):
        ours = mtcnn._crops(integral_image(rgb), boxes, size, detect_face)
        inside = [k for k in range(len(boxes)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]  # detect_face's test
        assert len(inside) > 20
        for k in inside:
            crop = image[None, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]]
            theirs = (detect_face.imresample(crop, (size, size)) - 127.5) * 0.0078125
            torch.testing.assert_close(ours[k : k + 1], theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["coffee.jpg", "rocket.jpg", "chelsea.jpg"])
def test_face_free_photos_have_no_face(name):
    image = cv2.resize(_rgb(name), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    assert detect_faces(image) == []


def test_flat_and_textured_images_have_no_face():
    assert detect_faces(np.full((1080, 1920, 3), 128, np.uint8)) == []
    assert detect_faces(busy_texture(np.random.default_rng(1))) == []


def test_faces_carry_a_confidence_that_survives_pickling(portrait):
    rgb, _ = portrait
    [face] = detect_faces(rgb)
    assert isinstance(face, Face) and 0.9 <= face.confidence <= 1.0
    x0, y0, x1, y1 = face  # still a box
    assert x1 > x0 and y1 > y0
    again = pickle.loads(pickle.dumps(face))
    assert again == face and again.confidence == face.confidence
    assert Face((1, 2, 3, 4), 0.5) == (1, 2, 3, 4)


def test_min_confidence_drops_unsure_faces(portrait):
    rgb, _ = portrait
    assert detect_faces(rgb, FaceConfig(min_confidence=1.0)) == []


def test_training_face_instances_come_from_the_screening_detector(portrait):
    """Training's face source calls detect_faces with the screening detector: the same
    boxes and confidences as a direct call with its config."""
    assert TRAINING_FACES.detector == FaceConfig().detector
    rgb, _ = portrait
    direct = detect_faces(rgb, TRAINING_FACES)
    boxes = FaceDetector().detect(rgb)
    assert direct
    assert [(b.x, b.y, b.x + b.w, b.y + b.h) for b in boxes] == [tuple(f) for f in direct]
    assert [b.score for b in boxes] == [f.confidence for f in direct]


def test_a_missing_face_package_names_the_install_command(monkeypatch, portrait):
    mtcnn._nets.cache_clear()
    for name in [n for n in sys.modules if n.split(".")[0] == "facenet_pytorch"] + ["facenet_pytorch"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    try:
        with pytest.raises(FaceDetectorError, match=r"pip install --no-deps facenet-pytorch==2\.6\.0"):
            load_face_detector(FaceConfig())
        with pytest.raises(FaceDetectorError, match="facenet-pytorch"):
            detect_faces(portrait[0])
        load_face_detector(FaceConfig(detector="haar"))  # the cascades need no package
    finally:
        monkeypatch.undo()
        mtcnn._nets.cache_clear()
    assert detect_faces(portrait[0])


def _blurred_face_maps(box):
    prob = np.zeros((200, 300), np.float32)
    x0, y0, x1, y1 = box
    prob[y0:y1, x0:x1] = 1.0
    return prob, np.zeros_like(prob)


def test_an_unsure_blurred_face_sends_to_review_and_a_sure_one_rejects():
    """A 0.3-confidence "face" on a textured wall must not reject an image."""
    box = (100, 50, 140, 100)  # 2000 px of 60000: below every area rule
    prob, inten = _blurred_face_maps(box)
    unsure = analyse_regions(prob, inten, 0.5, faces=[Face(box, 0.3)])
    assert unsure.verdict == Verdict.REVIEW
    assert unsure.score < 1.0
    assert any("confidence 0.30 <" in r for r in unsure.reasons), unsure.reasons
    sure = analyse_regions(prob, inten, 0.5, faces=[Face(box, 0.999)])
    assert sure.verdict == Verdict.REJECT and sure.score == 1.0
    plain_box = analyse_regions(prob, inten, 0.5, faces=[box])  # a caller's box counts as certain
    assert plain_box.verdict == Verdict.REJECT
    lenient = analyse_regions(prob, inten, 0.5, faces=[Face(box, 0.3)], config=RegionConfig(face_reject_confidence=0.2))
    assert lenient.verdict == Verdict.REJECT
