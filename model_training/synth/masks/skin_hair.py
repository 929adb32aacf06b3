"""Skin and hair instances inside the foreground, cut around detected faces."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import _check_image, _components, _ellipse_kernel, _to_u8
from model_training.synth.masks.faces import FaceBox, FaceDetector
from model_training.synth.masks.matte import ForegroundMatte


class SkinHair:
    """Skin (hands, arms, necks) and hair instances inside the foreground.

    These are the fine-grained parts where blur hurts most, so they get their own instances
    rather than being folded into the whole-subject matte.
    """

    name = "skin_hair"

    def __init__(
        self,
        foreground: ForegroundMatte | None = None,
        faces: FaceDetector | None = None,
        *,
        cr_range: tuple[int, int] = (133, 173),
        cb_range: tuple[int, int] = (77, 127),
        min_luma: int = 40,
        hair_max_value: int = 90,
        hair_relative_value: float = 0.7,
        hair_max_saturation: int = 50,
        min_area_fraction: float = 0.002,
        max_skin_instances: int = 4,
    ) -> None:
        self.foreground = foreground if foreground is not None else ForegroundMatte()
        self.faces = faces if faces is not None else FaceDetector()
        self.cr_range = cr_range
        self.cb_range = cb_range
        self.min_luma = min_luma
        self.hair_max_value = hair_max_value
        self.hair_relative_value = hair_relative_value
        self.hair_max_saturation = hair_max_saturation
        self.min_area_fraction = min_area_fraction
        self.max_skin_instances = max_skin_instances

    def __call__(self, image: np.ndarray, foreground_mask: np.ndarray | None = None) -> list[Instance]:
        """``foreground_mask`` (nonzero = foreground) replaces the held matte when a caller
        already has a better one, e.g. from a learned segmenter."""
        _check_image(image)
        height, width = image.shape[:2]
        if foreground_mask is None:
            inside = self.foreground.foreground_mask(image)
        else:
            inside = np.asarray(foreground_mask) > 0
            if inside.shape != (height, width):
                raise ValueError(f"foreground mask {inside.shape} does not match the image {(height, width)}")
        if not inside.any():
            return []
        faces = self.faces.detect(image)
        face_area = np.zeros((height, width), np.uint8)
        for face in faces:
            centre, axes = self.faces.face_ellipse(face)
            cv2.ellipse(face_area, centre, axes, 0, 0, 360, 255, thickness=-1)
        min_area = self.min_area_fraction * height * width
        skin = self.skin_mask(image) & inside
        instances = [
            Instance(_to_u8(component), "skin", 1.0)
            for component, _ in _components(
                skin & ~self._grow(face_area, 0.15, faces), min_area, self.max_skin_instances
            )
        ]
        instances += self._hair(image, inside, skin, faces, min_area)
        return instances

    def skin_mask(self, image: np.ndarray) -> np.ndarray:
        """Skin-coloured pixels (boolean): the classic YCrCb box, robust across skin tones."""
        luma, cr, cb = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb))
        raw = (
            (luma >= self.min_luma)
            & (cr >= self.cr_range[0])
            & (cr <= self.cr_range[1])
            & (cb >= self.cb_range[0])
            & (cb <= self.cb_range[1])
        )
        kernel = _ellipse_kernel(0.006 * min(image.shape[:2]))
        cleaned = cv2.morphologyEx(_to_u8(raw), cv2.MORPH_OPEN, kernel)
        return cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, kernel) > 0

    @staticmethod
    def _grow(mask: np.ndarray, fraction: float, faces: Sequence[FaceBox]) -> np.ndarray:
        if not faces:
            return mask > 0
        size = fraction * float(np.median([f.w for f in faces]))
        return cv2.dilate(mask, _ellipse_kernel(size)) > 0

    def _hair(
        self,
        image: np.ndarray,
        inside: np.ndarray,
        skin: np.ndarray,
        faces: Sequence[FaceBox],
        min_area: float,
    ) -> list[Instance]:
        if not faces:
            return []
        height, width = image.shape[:2]
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        value, saturation = hsv[..., 2], hsv[..., 1]
        instances = []
        for face in faces:
            centre, (ax, ay) = self.faces.face_ellipse(face)
            face_mask = np.zeros((height, width), np.uint8)
            cv2.ellipse(face_mask, centre, (ax, ay), 0, 0, 360, 255, thickness=-1)
            # Brown hair is often skin-coloured in YCrCb, so "dark" is judged against the
            # face itself; grey and white hair are caught by low saturation instead.
            face_value = float(np.median(value[face_mask > 0])) if face_mask.any() else 255.0
            dark = value <= max(self.hair_max_value, self.hair_relative_value * face_value)
            hair_like = dark | ((saturation <= self.hair_max_saturation) & ~skin)
            band = np.zeros((height, width), np.uint8)
            hair_centre = (centre[0], round(centre[1] - 0.2 * ay))
            cv2.ellipse(band, hair_centre, (round(1.6 * ax), round(1.5 * ay)), 0, 0, 360, 255, -1)
            band[min(height, centre[1] + ay) :, :] = 0
            region = hair_like & inside & (band > 0) & (face_mask == 0)
            region = cv2.morphologyEx(_to_u8(region), cv2.MORPH_OPEN, _ellipse_kernel(0.05 * ax))
            touching = cv2.dilate(face_mask, _ellipse_kernel(0.2 * ax)) > 0
            count, labels = cv2.connectedComponents(region, connectivity=8)
            hair = np.zeros((height, width), bool)
            for label in range(1, count):
                component = labels == label
                if (component & touching).any():
                    hair |= component
            if np.count_nonzero(hair) >= max(min_area, 1):
                instances.append(Instance(_to_u8(hair), "hair", face.score))
        return instances
