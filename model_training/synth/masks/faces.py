"""Face instances for training: the worker's own face detector, drawn as ellipses.

Training and screening find faces with the same code (qc_worker.detector.faces), so the
faces the detector learns to judge are the faces the worker will weigh most.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import _check_image, _image_digest, _LastImageCache
from qc_worker.config import FaceConfig
from qc_worker.detector.faces import detect_faces

#: Training sources are small (portraits are 225x275), so faces down to 8 % of the short
#: side count, and profiles are always looked for: more face instances, more face blur.
TRAINING_FACES = FaceConfig(min_size_fraction=0.08, max_side=512, profile="always")


@dataclass(frozen=True)
class FaceBox:
    """A face detection in image pixels, with the ellipse its mask is drawn from."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    def ellipse(self, width_scale: float, height_scale: float, lift: float) -> tuple[tuple[int, int], tuple[int, int]]:
        """(centre, half-axes): wider than the box and lifted, since face boxes cut off the
        forehead, the ears and part of the chin."""
        centre = (round(self.x + self.w / 2), round(self.y + self.h / 2 - lift * self.h))
        axes = (max(1, round(self.w * width_scale / 2)), max(1, round(self.h * height_scale / 2)))
        return centre, axes


class FaceDetector:
    """Face instances from the worker's face detector (:func:`qc_worker.detector.faces.detect_faces`)."""

    name = "faces"

    def __init__(
        self,
        *,
        config: FaceConfig = TRAINING_FACES,
        width_scale: float = 1.16,
        height_scale: float = 1.12,
        lift: float = 0.08,
    ) -> None:
        # The ellipse was tuned on Haar boxes (0.95 x 1.25 of the box, lifted 0.08). MTCNN's
        # boxes are narrower and taller: on 199 portraits where both found one face, Haar's
        # box was 1.22x as wide and 0.90x as tall, centred within 1 % of it. These scales
        # draw the same ellipse from MTCNN's box (a test holds the two together).
        self.config = config
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
        """Deduplicated detections in image pixels, largest first (cached per image)."""
        _check_image(image)
        key = _image_digest(image)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._detect(image)
            self._cache.put(key, cached)
        return list(cached)

    def _detect(self, image: np.ndarray) -> list[FaceBox]:
        return [FaceBox(f[0], f[1], f[2] - f[0], f[3] - f[1], f.confidence) for f in detect_faces(image, self.config)]
