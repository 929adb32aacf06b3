"""Hard negatives: softness and artefacts that look like blur but are not motion blur.

Each degradation has explicit parameters and a seeded sampler, like the blur types, and
works on an 8-bit RGB image. Applied alone they make a sample whose mask is empty;
applied after motion blur they leave the mask as it is, so that "compressed" or "noisy"
never becomes a shortcut for "sharp".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from model_training.synth.config import NegativeConfig
from model_training.synth.record import Recorded


class _Degradation(Recorded, ABC):
    @abstractmethod
    def apply(self, image: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Defocus(_Degradation):
    """Out-of-focus softness: a disk (lens aperture) or Gaussian kernel, optionally in a region.

    A region (``region_seed`` set) mimics shallow depth of field, where part of the frame
    is soft on purpose; that is exactly the softness the detector must leave alone.
    """

    name: ClassVar[str] = "defocus"
    sigma: float
    disk: bool
    region_seed: int | None

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> "Defocus":
        return cls(
            sigma=float(rng.uniform(*cfg.defocus_sigma)),
            disk=bool(rng.random() < 0.5),
            region_seed=int(rng.integers(0, 2**31 - 1)) if rng.random() < 0.5 else None,
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        img = image.astype(np.float32)
        if self.disk:
            r = max(1, int(round(self.sigma * 1.5)))
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(
                np.float32
            )
            soft = cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT_101)
        else:
            soft = cv2.GaussianBlur(img, (0, 0), self.sigma)
        if self.region_seed is not None:
            weight = _soft_region(image.shape[:2], self.region_seed)[..., None]
            soft = weight * soft + (1 - weight) * img
        return np.clip(np.round(soft), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Jpeg(_Degradation):
    name: ClassVar[str] = "jpeg"
    quality: int

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> "Jpeg":
        return cls(quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))

    def apply(self, image: np.ndarray) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode an image")
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


@dataclass(frozen=True)
class Noise(_Degradation):
    """Sensor noise, optionally in low light (darkened, so shot noise dominates)."""

    name: ClassVar[str] = "noise"
    sigma: float
    low_light: float
    seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> "Noise":
        return cls(
            sigma=float(rng.uniform(*cfg.noise_sigma)),
            low_light=float(rng.uniform(0.35, 0.8)) if rng.random() < 0.3 else 1.0,
            seed=int(rng.integers(0, 2**31 - 1)),
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        x = image.astype(np.float32) / 255.0 * self.low_light
        shot = np.sqrt(np.maximum(x, 0.0)) * self.sigma
        x = x + rng.normal(size=x.shape).astype(np.float32) * (shot + self.sigma * 0.5)
        return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Rescale(_Degradation):
    """Down-and-up scaling: the softness of an upscaled low-resolution master."""

    name: ClassVar[str] = "rescale"
    factor: float
    cubic: bool

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> "Rescale":
        return cls(factor=float(rng.uniform(*cfg.rescale_factor)), cubic=bool(rng.random() < 0.5))

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        small = cv2.resize(
            image, (max(1, round(w * self.factor)), max(1, round(h * self.factor))),
            interpolation=cv2.INTER_AREA,
        )
        up = cv2.INTER_CUBIC if self.cubic else cv2.INTER_LINEAR
        return cv2.resize(small, (w, h), interpolation=up)


DEGRADATIONS: dict[str, type] = {c.name: c for c in (Defocus, Jpeg, Noise, Rescale)}


def sample_degradations(
    rng: np.random.Generator, cfg: NegativeConfig, *, max_count: int = 2
) -> list[_Degradation]:
    """One or more distinct degradations in a random order (JPEG, if drawn, goes last,
    as a delivery pipeline would compress last)."""
    names = list(DEGRADATIONS)
    count = int(rng.integers(1, max_count + 1))
    picked = [names[i] for i in rng.choice(len(names), size=count, replace=False)]
    picked.sort(key=lambda n: n == "jpeg")
    return [DEGRADATIONS[n].sample(rng, cfg) for n in picked]


def _soft_region(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random 0..1 field covering part of the frame (for depth-of-field softness)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = rng.random((4, 4)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip((field - 0.5) * 4 + 0.5, 0.0, 1.0)
