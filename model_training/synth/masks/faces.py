"""Faces from OpenCV's shipped Haar cascades, drawn as ellipses."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import (
    MaskSourceError,
    _check_image,
    _image_digest,
    _LastImageCache,
)

_FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
_PROFILE_CASCADE = "haarcascade_profileface.xml"


@functools.cache
def _load_cascade(filename: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / filename
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise MaskSourceError(f"OpenCV Haar cascade {path} is missing or unreadable")
    return cascade


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


@dataclass(frozen=True)
class FaceBox:
    """A face detection in image pixels, with the ellipse its mask is drawn from."""

    x: int
    y: int
    w: int
    h: int
    score: float
    profile: bool

    def ellipse(
        self, width_scale: float, height_scale: float, lift: float
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """(centre, half-axes): taller than the box and lifted, since Haar boxes cut off the
        forehead and part of the chin."""
        centre = (round(self.x + self.w / 2), round(self.y + self.h / 2 - lift * self.h))
        axes = (max(1, round(self.w * width_scale / 2)), max(1, round(self.h * height_scale / 2)))
        return centre, axes


class FaceDetector:
    """Face instances from OpenCV's shipped Haar cascades (frontal and both profiles)."""

    name = "faces"

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_fraction: float = 0.08,
        max_side: int = 512,
        use_profile: bool = True,
        duplicate_iou: float = 0.3,
        width_scale: float = 0.95,
        height_scale: float = 1.25,
        lift: float = 0.08,
    ) -> None:
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_fraction = min_size_fraction
        self.max_side = max_side
        self.use_profile = use_profile
        self.duplicate_iou = duplicate_iou
        self.width_scale = width_scale
        self.height_scale = height_scale
        self.lift = lift
        self._cache = _LastImageCache()

    def __call__(self, image: np.ndarray) -> list[Instance]:
        height, width = image.shape[:2]
        instances = []
        for face in self.detect(image):
            mask = np.zeros((height, width), np.uint8)
            centre, axes = self.face_ellipse(face)
            cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, thickness=-1)
            if mask.any():
                instances.append(Instance(mask, "face", face.score))
        return instances

    def face_ellipse(self, face: FaceBox) -> tuple[tuple[int, int], tuple[int, int]]:
        """The ellipse this detector draws for ``face``, so skin/hair can cut around it."""
        return face.ellipse(self.width_scale, self.height_scale, self.lift)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Deduplicated detections, frontal ones first, in image pixels."""
        _check_image(image)
        key = _image_digest(image)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._detect(image)
            self._cache.put(key, cached)
        return list(cached)

    def _detect(self, image: np.ndarray) -> list[FaceBox]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width, 1))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(12, round(self.min_size_fraction * min(gray.shape)))
        if min(gray.shape) < min_side:
            return []
        candidates = self._run(_FRONTAL_CASCADE, gray, min_side, profile=False)
        if self.use_profile:
            candidates += self._run(_PROFILE_CASCADE, gray, min_side, profile=True)
            mirrored = self._run(_PROFILE_CASCADE, gray[:, ::-1].copy(), min_side, profile=True)
            gw = gray.shape[1]
            candidates += [
                FaceBox(gw - f.x - f.w, f.y, f.w, f.h, f.score, True) for f in mirrored
            ]
        kept: list[FaceBox] = []
        for face in sorted(candidates, key=lambda f: (f.profile, -f.score)):
            box = (face.x, face.y, face.w, face.h)
            if all(
                _box_iou(box, (k.x, k.y, k.w, k.h)) <= self.duplicate_iou for k in kept
            ):
                kept.append(face)
        return [
            FaceBox(
                round(f.x / scale), round(f.y / scale), round(f.w / scale), round(f.h / scale),
                f.score, f.profile,
            )
            for f in kept
        ]

    def _run(
        self, cascade_file: str, gray: np.ndarray, min_side: int, profile: bool
    ) -> list[FaceBox]:
        boxes, neighbours = _load_cascade(cascade_file).detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        # More agreeing neighbours means a more trustworthy detection; squash to (0, 1).
        return [
            FaceBox(int(x), int(y), int(w), int(h), float(n / (n + self.min_neighbors)), profile)
            for (x, y, w, h), n in zip(boxes, np.ravel(neighbours), strict=True)
        ]
