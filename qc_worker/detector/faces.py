"""The worker's own subject finder: faces and a salient-foreground box for regions and ROIs.

Faces come from one of two detectors, chosen by :attr:`FaceConfig.detector`:

* ``mtcnn`` (the default): the MTCNN networks of :mod:`qc_worker.detector.mtcnn`, which find
  turned, tilted, small, dark, half-covered and blurred faces and give each a probability;
  chosen by measurement (``bench/faces.py``, BENCHMARKS.md).
* ``haar``: OpenCV's shipped Haar cascades (``cv2.data.haarcascades``), the frontal
  default cascade and the profile cascade (run on the image and on its mirror, since it
  only knows one side; by default only when no frontal face was found). They give no
  probability, so their faces carry confidence 1.0.

Either runs on a copy downscaled to at most :attr:`FaceConfig.max_side` pixels on its long
side; boxes come back in the pixels of the image that was passed in, as :class:`Face`
values: a box that carries its detector's confidence, which the face-blur rules read
(:mod:`qc_worker.detector.regions`). Training's face instances call this same function, so
the faces the model learns to judge are the faces screening weighs most.

The salient foreground is the spectral-residual saliency of Hou & Zhang (CVPR 2007) on a
64 x 64 grey thumbnail, thresholded at a multiple of its mean, each blob filled to its
convex hull, joined with the face boxes.
It is deliberately crude and cheap (a few milliseconds at 1080p): it frames ROIs and gives
the "foreground" region its pixels, nothing more.

Boxes are those of :mod:`qc_worker.detector.boxes`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qc_worker.config import FaceConfig
from qc_worker.detector import mtcnn
from qc_worker.detector.boxes import Box, box_area, box_intersection, box_iou, clip_box
from qc_worker.detector.saliency import spectral_residual

__all__ = [
    "Face",
    "FaceConfig",
    "FaceDetectorError",
    "Foreground",
    "SaliencyConfig",
    "detect_faces",
    "face_confidence",
    "load_cascades",
    "load_face_detector",
    "salient_foreground",
]

FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
PROFILE_CASCADE = "haarcascade_profileface.xml"


class FaceDetectorError(RuntimeError):
    """A detector's model is missing or unreadable (its message says what to install), or
    the image is not an image."""


class Face(tuple):
    """A face box ``(x0, y0, x1, y1)`` that carries its detector's ``confidence`` (0-1).

    It is a :data:`Box` (a tuple of four ints) wherever a box is expected, so regions, ROIs
    and the foreground take faces and plain boxes alike.
    """

    confidence: float

    def __new__(cls, box: Sequence[int], confidence: float) -> Face:
        face = super().__new__(cls, (int(v) for v in box))
        face.confidence = float(confidence)
        return face

    def __getnewargs__(self) -> tuple[tuple[int, ...], float]:  # pickling keeps the confidence
        return tuple(self), self.confidence

    def __repr__(self) -> str:
        return f"Face({tuple(self)!r}, confidence={self.confidence:.3f})"


def face_confidence(face: Box) -> float:
    """A face's confidence; a plain box given by a caller counts as certain (1.0)."""
    return face.confidence if isinstance(face, Face) else 1.0


class SaliencyConfig(BaseModel):
    """Spectral-residual foreground settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(64, ge=16, le=256, description="Side of the square saliency thumbnail.")
    sigma: float = Field(2.5, gt=0.0, description="Gaussian smoothing of the saliency map (px).")
    threshold_factor: float = Field(3.0, gt=0.0, description="Salient where saliency >= this multiple of its mean.")
    min_mass_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Keep salient blobs holding at least this share of the salient mass.",
    )
    min_contrast: float = Field(
        2.0, ge=0.0, description="Grey standard deviation (0-255) below which nothing is salient."
    )


# --- faces ----------------------------------------------------------------------------


class _Cascade:
    """One loaded cascade; detectMultiScale is not documented thread-safe, so it is locked."""

    def __init__(self, filename: str) -> None:
        path = Path(cv2.data.haarcascades) / filename
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise FaceDetectorError(f"OpenCV Haar cascade {path} is missing or unreadable")
        self.lock = threading.Lock()

    def detect(self, gray: np.ndarray, config: FaceConfig, min_side: int) -> list[Box]:
        with self.lock:
            found = self.classifier.detectMultiScale(
                gray,
                scaleFactor=config.scale_factor,
                minNeighbors=config.min_neighbors,
                minSize=(min_side, min_side),
            )
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in np.reshape(found, (-1, 4))]


_LOAD_LOCK = threading.Lock()


@functools.cache
def _cascade(filename: str) -> _Cascade:
    with _LOAD_LOCK:
        return _Cascade(filename)


def load_cascades() -> None:
    """Load both cascades now (they otherwise load on first use); raise if one is missing."""
    _cascade(FRONTAL_CASCADE)
    _cascade(PROFILE_CASCADE)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FaceDetectorError("expected a uint8 numpy image")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise FaceDetectorError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


def _to_gray(image: np.ndarray) -> np.ndarray:
    _check_image(image)
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image if image.shape[2] == 3 else cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)


def _is_duplicate(box: Box, kept: Sequence[Box], config: FaceConfig) -> bool:
    area = box_area(box)
    for other in kept:
        if box_iou(box, other) > config.duplicate_iou:
            return True
        if area and box_intersection(box, other) / area >= config.duplicate_containment:
            return True
    return False


def load_face_detector(config: FaceConfig = FaceConfig()) -> None:
    """Load the configured detector now (it otherwise loads on first use), so a missing
    model or package is one clear error before any image is read."""
    if config.detector == "haar":
        load_cascades()
        return
    try:
        mtcnn.load()
    except mtcnn.MissingRuntimeError as exc:
        raise FaceDetectorError(str(exc)) from exc


def _downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, scale


def _haar_candidates(image: np.ndarray, config: FaceConfig) -> tuple[list[tuple[Box, float]], float]:
    gray, scale = _downscaled(_to_gray(image), config.max_side)
    gray = cv2.equalizeHist(gray)
    min_side = max(16, round(config.min_size_fraction * min(gray.shape)))
    if min(gray.shape) < min_side:
        return [], scale
    candidates = _cascade(FRONTAL_CASCADE).detect(gray, config, min_side)
    if config.profile == "always" or (config.profile == "fallback" and not candidates):
        profile = _cascade(PROFILE_CASCADE)
        candidates += profile.detect(gray, config, min_side)
        gw = gray.shape[1]
        mirrored = profile.detect(np.ascontiguousarray(gray[:, ::-1]), config, min_side)
        candidates += [(gw - x1, y0, gw - x0, y1) for x0, y0, x1, y1 in mirrored]
    return [(box, 1.0) for box in candidates], scale  # frontal first, in cascade order


def _mtcnn_candidates(image: np.ndarray, config: FaceConfig) -> tuple[list[tuple[Box, float]], float]:
    rgb, scale = _downscaled(_to_rgb(image), config.max_side)
    min_face = max(12, round(config.min_size_fraction * min(rgb.shape[:2])))
    if min(rgb.shape[:2]) < min_face:
        return [], scale
    try:
        found = mtcnn.detect(rgb, min_face, config.pyramid_factor)
    except mtcnn.MissingRuntimeError as exc:
        raise FaceDetectorError(str(exc)) from exc
    found = [(box, p) for box, p in found if p >= config.min_confidence]
    found.sort(key=lambda bp: bp[1], reverse=True)  # the surest face is kept first
    return found, scale  # type: ignore[return-value]


def detect_faces(image: np.ndarray, config: FaceConfig = FaceConfig()) -> list[Face]:
    """Faces in ``image`` pixels, largest first, each with its confidence.

    ``image`` is RGB (or RGBA, or grey) uint8. Candidates are kept in the detector's order
    (Haar: frontal before profile; MTCNN: surest first); a box is dropped as a duplicate
    when its IoU with a kept box exceeds ``duplicate_iou`` or it lies mostly inside one.
    """
    _check_image(image)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return []
    detect = _haar_candidates if config.detector == "haar" else _mtcnn_candidates
    candidates, scale = detect(image, config)
    kept: list[tuple[Box, float]] = []
    for box, confidence in candidates:
        if not _is_duplicate(box, [k for k, _ in kept], config):
            kept.append((box, confidence))
    faces = [Face(clip_box([v / scale for v in box], width, height), c) for box, c in kept]
    faces = [f for f in faces if box_area(f) > 0]
    return sorted(faces, key=box_area, reverse=True)


# --- salient foreground ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Foreground:
    """The salient foreground of an image: its box and its pixels (bool HxW)."""

    box: Box
    mask: np.ndarray
    source: Literal["saliency", "faces", "saliency+faces"]

    @property
    def area_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def to_dict(self) -> dict:
        return {"box": list(self.box), "source": self.source, "area_fraction": self.area_fraction}


def _saliency_mask(gray: np.ndarray, config: SaliencyConfig) -> np.ndarray | None:
    """Salient pixels of the ``size`` x ``size`` thumbnail (bool), or None when flat."""
    small = cv2.resize(gray, (config.size, config.size), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    if float(small.std()) < config.min_contrast:
        return None
    saliency = spectral_residual(small, config.sigma)
    mean = float(saliency.mean())
    if not np.isfinite(mean) or mean <= 0:
        return None
    salient = (saliency >= config.threshold_factor * mean).astype(np.uint8)
    count, labels = cv2.connectedComponents(salient, connectivity=8)
    if count <= 1:
        return None
    mass = np.bincount(labels.ravel(), weights=saliency.ravel(), minlength=count)[1:]
    keep = np.flatnonzero(mass >= config.min_mass_fraction * mass.sum()) + 1
    kept = np.isin(labels, keep).astype(np.uint8)
    # Spectral residual fires on an object's edges and corners more than on its inside:
    # close gaps of up to an eighth of the thumbnail and fill each blob's convex hull, so
    # the mask is the object and not its rim.
    side = max(3, config.size // 8) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    kept = cv2.morphologyEx(kept, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(kept, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        cv2.fillConvexPoly(kept, cv2.convexHull(contour), 1)
    return kept.astype(bool)


def salient_foreground(
    image: np.ndarray,
    faces: Sequence[Box] = (),
    config: SaliencyConfig = SaliencyConfig(),
) -> Foreground | None:
    """The salient foreground of an RGB uint8 image, joined with ``faces``.

    The box holds every kept salient blob and every face; the mask is the salient pixels
    (upscaled from the thumbnail) or'ed with the face boxes. None when the image is flat
    and has no faces.
    """
    gray = _to_gray(image)
    height, width = gray.shape
    if height == 0 or width == 0:
        return None
    small_mask = _saliency_mask(gray, config)
    mask = np.zeros((height, width), bool)
    sources = []
    if small_mask is not None:
        up = cv2.resize(small_mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = up >= 128
        if mask.any():
            sources.append("saliency")
    face_boxes = [clip_box(f, width, height) for f in faces]
    face_boxes = [f for f in face_boxes if box_area(f) > 0]
    for x0, y0, x1, y1 in face_boxes:
        mask[y0:y1, x0:x1] = True
    if face_boxes:
        sources.append("faces")
    if not sources:
        return None
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return Foreground(box=box, mask=mask, source="+".join(sources))  # type: ignore[arg-type]
