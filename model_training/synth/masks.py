"""Offline mask sources: where on a sharp photo blur may be synthesised (paper 3.1).

The paper takes instance masks from SAM. Training must also run on machines without SAM
weights or a network, so the required sources here are classical and ship with OpenCV:
a GrabCut foreground matte seeded from spectral-residual saliency and a centre prior,
Haar-cascade faces, skin and hair heuristics inside the foreground, and random shapes as
the fallback. Learned segmenters (a TorchScript file, SAM) plug in when their weights are
given; nothing here ever downloads anything.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from model_training.synth.instances import Instance

logger = logging.getLogger(__name__)

SOURCE_NAMES: tuple[str, ...] = ("foreground", "faces", "skin_hair", "random", "torchscript", "sam")

_FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
_PROFILE_CASCADE = "haarcascade_profileface.xml"
# GrabCut's GMM initialisation runs k-means on OpenCV's global RNG; reseeding it makes the
# matte a function of the image alone.
_GRABCUT_RNG_SEED = 0x5EED


class MaskSourceError(Exception):
    """A mask source cannot be built or run (unknown name, missing weights or package)."""


@runtime_checkable
class MaskSource(Protocol):
    """Anything that turns an RGB uint8 HxWx3 image into instances."""

    name: str

    def __call__(self, image: np.ndarray) -> list[Instance]: ...


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")


def _image_digest(image: np.ndarray) -> bytes:
    """Content key, so per-image caches and fallback seeds do not depend on object identity."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()


def _seed_from_image(image: np.ndarray) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(_image_digest(image)[:8], "little"))


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _ellipse_kernel(size: float) -> np.ndarray:
    k = _odd(size)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _to_u8(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.uint8(255), np.uint8(0))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a_on, b_on = a > 0, b > 0
    union = np.count_nonzero(a_on | b_on)
    return np.count_nonzero(a_on & b_on) / union if union else 0.0


def _components(
    mask: np.ndarray, min_area: float, max_count: int
) -> list[tuple[np.ndarray, int]]:
    """Largest connected components first, because the big ones are the subject."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")
    out: list[tuple[np.ndarray, int]] = []
    for idx in order[:max_count]:
        if areas[idx] < max(min_area, 1):
            break
        out.append((labels == idx + 1, int(areas[idx])))
    return out


class _LastImageCache:
    """Remembers the result for the most recent image.

    ``build_mask_sources`` shares one matte and one face detector between the foreground,
    faces and skin/hair sources; this keeps them from computing the same thing twice.
    """

    def __init__(self) -> None:
        self._entry: tuple[bytes, Any] | None = None

    def get(self, key: bytes) -> Any | None:
        entry = self._entry
        return entry[1] if entry is not None and entry[0] == key else None

    def put(self, key: bytes, value: Any) -> None:
        self._entry = (key, value)


def spectral_residual_saliency(gray: np.ndarray, size: int = 64) -> np.ndarray:
    """Hou & Zhang (2007) saliency in [0, 1] at ``size`` x ``size``.

    Implemented here because opencv-contrib's ``cv2.saliency`` is not in the headless build;
    the log-spectrum residual singles out what is statistically unusual in the image.
    """
    small = cv2.resize(gray.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    if float(small.std()) < 1e-3:
        return np.zeros((size, size), np.float32)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-6).astype(np.float32)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3))
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), sigmaX=size / 24)
    saliency -= saliency.min()
    peak = float(saliency.max())
    return saliency / peak if peak > 0 else saliency


def centre_prior(height: int, width: int, sigma: float = 0.3) -> np.ndarray:
    """Gaussian in [0, 1] centred on the image; photographers put the subject near the middle."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))


class ForegroundMatte:
    """Foreground instances from GrabCut seeded by saliency and a centre prior."""

    name = "foreground"

    def __init__(
        self,
        *,
        work_size: int = 256,
        iterations: int = 4,
        saliency_size: int = 64,
        saliency_weight: float = 0.5,
        centre_sigma: float = 0.3,
        probable_threshold: float = 0.45,
        definite_threshold: float = 0.85,
        border_fraction: float = 0.03,
        max_instances: int = 3,
        min_area_fraction: float = 0.01,
        min_coverage: float = 0.02,
        max_coverage: float = 0.95,
        flat_std: float = 2.0,
    ) -> None:
        self.work_size = work_size
        self.iterations = iterations
        self.saliency_size = saliency_size
        self.saliency_weight = saliency_weight
        self.centre_sigma = centre_sigma
        self.probable_threshold = probable_threshold
        self.definite_threshold = definite_threshold
        self.border_fraction = border_fraction
        self.max_instances = max_instances
        self.min_area_fraction = min_area_fraction
        self.min_coverage = min_coverage
        self.max_coverage = max_coverage
        self.flat_std = flat_std
        self._cache = _LastImageCache()

    def prior(self, image: np.ndarray) -> np.ndarray:
        """Foreground likelihood in [0, 1] at the image's size (saliency blended with centre)."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        saliency = cv2.resize(
            spectral_residual_saliency(gray, self.saliency_size),
            (width, height),
            interpolation=cv2.INTER_LINEAR,
        )
        mixed = self.saliency_weight * saliency + (1 - self.saliency_weight) * centre_prior(
            height, width, self.centre_sigma
        )
        return mixed / max(float(mixed.max()), 1e-6)

    def __call__(self, image: np.ndarray) -> list[Instance]:
        return [Instance(mask.copy(), self.name, score) for mask, score in self._matte(image)]

    def foreground_mask(self, image: np.ndarray) -> np.ndarray:
        """Union of the foreground instances as a boolean HxW mask."""
        union = np.zeros(image.shape[:2], bool)
        for mask, _ in self._matte(image):
            union |= mask > 0
        return union

    def _matte(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        _check_image(image)
        key = _image_digest(image)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._compute(image)
            self._cache.put(key, cached)
        return cached

    def _compute(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        height, width = image.shape[:2]
        if min(height, width) < 2:
            return []
        if float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).std()) < self.flat_std:
            return []
        scale = min(1.0, self.work_size / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        prior = self.prior(small)
        foreground = self._grabcut(small, prior)
        foreground = self._clean(foreground)
        full = cv2.resize(foreground.astype(np.float32), (width, height)) >= 0.5
        full_prior = cv2.resize(prior, (width, height), interpolation=cv2.INTER_LINEAR)
        return [
            (_to_u8(component), float(full_prior[component].mean()))
            for component, _ in _components(
                full, self.min_area_fraction * height * width, self.max_instances
            )
        ]

    def _seeds(self, prior: np.ndarray) -> np.ndarray:
        seeds = np.full(prior.shape, cv2.GC_PR_BGD, np.uint8)
        seeds[prior >= self.probable_threshold] = cv2.GC_PR_FGD
        seeds[prior >= self.definite_threshold] = cv2.GC_FGD
        band = max(1, round(self.border_fraction * min(prior.shape)))
        seeds[:band, :] = seeds[-band:, :] = cv2.GC_BGD
        seeds[:, :band] = seeds[:, -band:] = cv2.GC_BGD
        return seeds

    def _grabcut(self, small: np.ndarray, prior: np.ndarray) -> np.ndarray:
        fallback = prior >= self.probable_threshold
        seeds = self._seeds(prior)
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(_GRABCUT_RNG_SEED)
        try:
            cv2.grabCut(
                cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                seeds,
                None,
                bgd_model,
                fgd_model,
                self.iterations,
                cv2.GC_INIT_WITH_MASK,
            )
        except cv2.error as exc:
            logger.debug("GrabCut failed (%s); using the thresholded prior", exc)
            return fallback
        foreground = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
        coverage = float(foreground.mean())
        # On weak colour separation GrabCut collapses onto the definite seeds or swallows
        # the frame; the prior is the better guess then.
        collapsed = coverage <= 1.5 * float((prior >= self.definite_threshold).mean())
        if collapsed or not self.min_coverage <= coverage <= self.max_coverage:
            logger.debug("GrabCut covered %.1f%% of the image; using the prior", 100 * coverage)
            return fallback
        return foreground

    @staticmethod
    def _clean(mask: np.ndarray) -> np.ndarray:
        kernel = _ellipse_kernel(0.015 * min(mask.shape))
        cleaned = cv2.morphologyEx(_to_u8(mask), cv2.MORPH_OPEN, kernel)
        return cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, kernel) > 0


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

    def __call__(
        self, image: np.ndarray, foreground_mask: np.ndarray | None = None
    ) -> list[Instance]:
        """``foreground_mask`` (nonzero = foreground) replaces the held matte when a caller
        already has a better one, e.g. from a learned segmenter."""
        _check_image(image)
        height, width = image.shape[:2]
        if foreground_mask is None:
            inside = self.foreground.foreground_mask(image)
        else:
            inside = np.asarray(foreground_mask) > 0
            if inside.shape != (height, width):
                raise ValueError(
                    f"foreground mask {inside.shape} does not match the image {(height, width)}"
                )
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
            & (cr >= self.cr_range[0]) & (cr <= self.cr_range[1])
            & (cb >= self.cb_range[0]) & (cb <= self.cb_range[1])
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
            band[min(height, centre[1] + ay):, :] = 0
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


class RandomShapes:
    """Random ellipses, polygons and noise blobs: the fallback when nothing is detected.

    Deterministic for a given generator (or, without one, for given image content) so a
    dataset can be rebuilt exactly.
    """

    name = "random"

    def __init__(
        self,
        *,
        count: tuple[int, int] = (1, 3),
        size: tuple[float, float] = (0.15, 0.5),
        shapes: Sequence[str] = ("ellipse", "polygon", "blob"),
    ) -> None:
        if count[0] < 1 or count[1] < count[0]:
            raise ValueError(f"count must be 1 <= low <= high, got {count}")
        if not 0 < size[0] <= size[1]:
            raise ValueError(f"size must be 0 < low <= high, got {size}")
        unknown = set(shapes) - {"ellipse", "polygon", "blob"}
        if unknown or not shapes:
            raise ValueError(f"shapes must be among ellipse, polygon, blob, got {list(shapes)}")
        self.count = count
        self.size = size
        self.shapes = tuple(shapes)

    def __call__(
        self, image: np.ndarray, rng: np.random.Generator | None = None
    ) -> list[Instance]:
        _check_image(image)
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            return []
        rng = rng if rng is not None else _seed_from_image(image)
        instances = []
        for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
            shape = self.shapes[int(rng.integers(len(self.shapes)))]
            diameter = max(2.0, rng.uniform(*self.size) * min(height, width))
            centre = (rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height)
            mask = np.zeros((height, width), np.uint8)
            if shape == "polygon":
                self._polygon(mask, centre, diameter, rng)
            elif shape == "blob":
                self._blob(mask, centre, diameter, rng)
            if not mask.any():
                self._ellipse(mask, centre, diameter, rng)
            instances.append(Instance(mask, "random", 1.0))
        return instances

    @staticmethod
    def _ellipse(
        mask: np.ndarray, centre: tuple[float, float], diameter: float, rng: np.random.Generator
    ) -> None:
        major = diameter / 2 * rng.uniform(0.6, 1.0)
        minor = major * rng.uniform(0.4, 1.0)
        cv2.ellipse(
            mask,
            (int(centre[0]), int(centre[1])),
            (max(1, round(major)), max(1, round(minor))),
            rng.uniform(0, 180), 0, 360, 255, thickness=-1,
        )

    @staticmethod
    def _polygon(
        mask: np.ndarray, centre: tuple[float, float], diameter: float, rng: np.random.Generator
    ) -> None:
        vertices = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = diameter / 2 * rng.uniform(0.4, 1.0, vertices)
        points = np.stack(
            [centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1
        )
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)

    @staticmethod
    def _blob(
        mask: np.ndarray, centre: tuple[float, float], diameter: float, rng: np.random.Generator
    ) -> None:
        side = max(3, round(diameter))
        noise = cv2.resize(
            rng.standard_normal((6, 6)).astype(np.float32), (side, side),
            interpolation=cv2.INTER_CUBIC,
        )
        coords = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
        radial = 1 - (coords[:, None] ** 2 + coords[None, :] ** 2)
        field = radial + 0.35 * noise / max(float(np.abs(noise).max()), 1e-6)
        blob = _components(field > 0.3, 1, 1)
        if not blob:
            return
        height, width = mask.shape
        x0, y0 = round(centre[0] - side / 2), round(centre[1] - side / 2)
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        dx1, dy1 = min(width, x0 + side), min(height, y0 + side)
        if dx1 <= dx0 or dy1 <= dy0:
            return
        patch = blob[0][0][sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
        mask[dy0:dy1, dx0:dx1][patch] = 255


class SegmenterSource(ABC):
    """Base for learned segmenters that plug in when a weights file is supplied.

    The weights are checked at construction, so a wrong path fails before a long run starts,
    but loaded lazily on first use, so the source can be sent to data-loader workers.
    """

    kind = "segmenter"

    def __init__(self, name: str, weights_path: Path | str) -> None:
        self.name = name
        self.weights_path = Path(weights_path)
        if not self.weights_path.is_file():
            raise MaskSourceError(f"{name}: weights file {self.weights_path} does not exist")
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def __call__(self, image: np.ndarray) -> list[Instance]:
        _check_image(image)
        if self._model is None:
            self._model = self._load()
        return [
            Instance(_to_u8(mask), self.kind, float(score))
            for mask, score in self._segment(image)
            if mask.any()
        ]

    @abstractmethod
    def _load(self) -> Any:
        """The model object ``_segment`` uses; called once, on first use."""

    @abstractmethod
    def _segment(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Boolean HxW masks with a confidence each."""


class TorchScriptSegmenter(SegmenterSource):
    """Any TorchScript model mapping 1x3xHxW in [0, 1] to 1xNxhxw logits (instances or, with
    N = 1, a foreground map); logits are resized to the image if needed and cut at 0."""

    def __init__(self, weights_path: Path | str, name: str = "torchscript") -> None:
        super().__init__(name, weights_path)

    def _load(self) -> Any:
        import torch

        try:
            model = torch.jit.load(str(self.weights_path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise MaskSourceError(
                f"{self.name}: {self.weights_path} is not a loadable TorchScript file: {exc}"
            ) from exc
        return model.eval()

    def _segment(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        import torch
        import torch.nn.functional as F

        height, width = image.shape[:2]
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            logits = self._model(tensor.float() / 255.0)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[0] != 1:
                raise MaskSourceError(
                    f"{self.name}: model must return a 1xNxHxW tensor, got "
                    f"{getattr(logits, 'shape', type(logits).__name__)}"
                )
            logits = logits.float()
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            probabilities = torch.sigmoid(logits[0]).numpy()
            masks = (logits[0] > 0).numpy()
        return [
            (mask, float(prob[mask].mean()) if mask.any() else 0.0)
            for mask, prob in zip(masks, probabilities, strict=True)
        ]


class SamSource(SegmenterSource):
    """Segment Anything's automatic mask generator, the paper's own mask source."""

    kind = "sam"

    def __init__(
        self,
        weights_path: Path | str,
        model_type: str = "vit_b",
        *,
        device: str = "cpu",
        generator_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__("sam", weights_path)
        try:
            import segment_anything  # noqa: F401
        except ImportError as exc:
            raise MaskSourceError(
                "sam: the segment_anything package is not installed; install segment-anything "
                f"to use SAM masks (weights are read from {self.weights_path}, never downloaded)"
            ) from exc
        self.model_type = model_type
        self.device = device
        self.generator_kwargs = dict(generator_kwargs or {})

    def _load(self) -> Any:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

        if self.model_type not in sam_model_registry:
            raise MaskSourceError(
                f"sam: unknown model_type {self.model_type!r}; "
                f"choose from {sorted(sam_model_registry)}"
            )
        sam = sam_model_registry[self.model_type](checkpoint=str(self.weights_path))
        return SamAutomaticMaskGenerator(sam.to(self.device), **self.generator_kwargs)

    def _segment(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        return [
            (np.asarray(record["segmentation"], bool), float(record.get("predicted_iou", 1.0)))
            for record in self._model.generate(image)
        ]


def build_mask_sources(
    names: Sequence[str],
    *,
    segmenter_weights: Path | None = None,
    sam_weights: Path | None = None,
) -> list[MaskSource]:
    """Sources by name, in the order given (earlier sources win when masks coincide).

    The foreground, faces and skin/hair sources share one matte and one face detector, so
    each image is matted and scanned for faces once.
    """
    matte = ForegroundMatte()
    faces = FaceDetector()
    sources: list[MaskSource] = []
    for name in names:
        if name == "foreground":
            sources.append(matte)
        elif name == "faces":
            sources.append(faces)
        elif name == "skin_hair":
            sources.append(SkinHair(matte, faces))
        elif name == "random":
            sources.append(RandomShapes())
        elif name == "torchscript":
            if segmenter_weights is None:
                raise MaskSourceError("mask source 'torchscript' needs segmenter_weights")
            sources.append(TorchScriptSegmenter(segmenter_weights))
        elif name == "sam":
            if sam_weights is None:
                raise MaskSourceError("mask source 'sam' needs sam_weights")
            sources.append(SamSource(sam_weights))
        else:
            raise MaskSourceError(
                f"unknown mask source {name!r}; valid names: {', '.join(SOURCE_NAMES)}"
            )
    return sources


def extract_instances(
    image: np.ndarray,
    sources: Sequence[MaskSource],
    *,
    rng: np.random.Generator | None = None,
    min_area_fraction: float = 0.002,
    max_instances: int = 12,
) -> list[Instance]:
    """Instances from all sources, filtered and deduplicated, never empty for a real image.

    Tiny masks are dropped because blur on a few pixels teaches nothing; near-identical
    masks (IoU > 0.9) are kept once so no region is over-sampled. When no source finds
    anything, random shapes stand in so every training image still gets blurred somewhere.
    """
    _check_image(image)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return []
    rng = rng if rng is not None else _seed_from_image(image)
    min_area = max(1.0, min_area_fraction * height * width)
    kept: list[Instance] = []
    for source in sources:
        found = source(image, rng) if isinstance(source, RandomShapes) else source(image)
        for instance in found:
            if instance.mask.shape != (height, width):
                raise MaskSourceError(
                    f"source {source.name!r} returned a {instance.mask.shape} mask "
                    f"for a {(height, width)} image"
                )
            if instance.area >= min_area and not any(
                _mask_iou(instance.mask, other.mask) > 0.9 for other in kept
            ):
                kept.append(instance)
        if len(kept) >= max_instances:
            break
    if kept:
        return kept[:max_instances]
    logger.debug("no mask source found an instance; falling back to random shapes")
    return [shape for shape in RandomShapes()(image, rng) if shape.area > 0][:max_instances]
