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
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> Defocus:
        return cls(
            sigma=float(rng.uniform(*cfg.defocus_sigma)),
            disk=bool(rng.random() < 0.5),
            region_seed=int(rng.integers(0, 2**31 - 1)) if rng.random() < 0.5 else None,
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        img = image.astype(np.float32)
        if self.disk:
            soft = _disk_blur(img, self.sigma * 1.5)
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
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> Jpeg:
        heavy = rng.random() < cfg.heavy_jpeg_prob
        lo, hi = cfg.heavy_jpeg_quality if heavy else cfg.jpeg_quality
        return cls(quality=int(rng.integers(lo, hi + 1)))

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
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> Noise:
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
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> Rescale:
        return cls(factor=float(rng.uniform(*cfg.rescale_factor)), cubic=bool(rng.random() < 0.5))

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        small = cv2.resize(
            image,
            (max(1, round(w * self.factor)), max(1, round(h * self.factor))),
            interpolation=cv2.INTER_AREA,
        )
        up = cv2.INTER_CUBIC if self.cubic else cv2.INTER_LINEAR
        return cv2.resize(small, (w, h), interpolation=up)


@dataclass(frozen=True)
class FilmGrain(_Degradation):
    """Film grain: noise with a grain size, strongest in mid-tones.

    Sharp texture everywhere, so the network learns that fine noise is not the absence of
    blur nor its presence; blurring the noise field gives it the clumped look of silver
    grains rather than per-pixel sensor noise.
    """

    name: ClassVar[str] = "film_grain"
    amplitude: float
    grain_sigma: float
    monochrome: bool
    seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> FilmGrain:
        return cls(
            amplitude=float(rng.uniform(*cfg.grain_amplitude)),
            grain_sigma=float(rng.uniform(*cfg.grain_size_px)),
            monochrome=bool(rng.random() < cfg.grain_mono_prob),
            seed=int(rng.integers(0, 2**31 - 1)),
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        rng = np.random.default_rng(self.seed)
        channels = 1 if self.monochrome else 3
        noise = rng.normal(size=(h, w, channels)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), self.grain_sigma).reshape(h, w, channels)
        noise /= max(float(noise.std()), 1e-6)
        x = image.astype(np.float32) / 255.0
        luma = x.mean(axis=2, keepdims=True)
        # Film grain is most visible in mid-tones and fades in deep shadows and highlights.
        weight = 0.3 + 2.8 * luma * (1.0 - luma)
        return _to_u8(x + self.amplitude * weight * noise)


@dataclass(frozen=True)
class SharpenHalo(_Degradation):
    """Sensor noise then unsharp masking: the halos of an over-sharpened camera JPEG.

    Halos are bright/dark fringes along edges; they resemble the double edges of a short
    blur streak but are symmetric and crisp, so they must stay "sharp".
    """

    name: ClassVar[str] = "sharpen_halo"
    amount: float
    radius: float
    noise_sigma: float
    seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> SharpenHalo:
        return cls(
            amount=float(rng.uniform(*cfg.sharpen_amount)),
            radius=float(rng.uniform(*cfg.sharpen_radius_px)),
            noise_sigma=float(rng.uniform(*cfg.sharpen_noise_sigma)),
            seed=int(rng.integers(0, 2**31 - 1)),
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        x = image.astype(np.float32) / 255.0
        x = x + rng.normal(size=x.shape).astype(np.float32) * self.noise_sigma
        smooth = cv2.GaussianBlur(x, (0, 0), self.radius)
        return _to_u8(x + self.amount * (x - smooth))


@dataclass(frozen=True)
class SoftLight(_Degradation):
    """Soft studio light: lifted blacks, a bloom around bright parts, a smooth light falloff.

    It reads as "soft" yet moves no edge: the bloom is light *added* on top of the image
    (screen blend), never a replacement of detail by a blurred copy.
    """

    name: ClassVar[str] = "soft_light"
    contrast: float
    bloom_weight: float
    bloom_sigma_frac: float
    gradient: float
    gradient_angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> SoftLight:
        return cls(
            contrast=float(rng.uniform(*cfg.soft_contrast)),
            bloom_weight=float(rng.uniform(*cfg.bloom_weight)),
            bloom_sigma_frac=float(rng.uniform(*cfg.bloom_sigma_frac)),
            gradient=float(rng.uniform(*cfg.light_gradient)),
            gradient_angle=float(rng.uniform(0.0, 2 * np.pi)),
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x = image.astype(np.float32) / 255.0
        x = self.contrast * x + (1.0 - self.contrast) * float(x.mean())
        bright = np.maximum(x - 0.6, 0.0) / 0.4
        glow = _large_blur(bright, self.bloom_sigma_frac * min(h, w))
        x = 1.0 - (1.0 - x) * (1.0 - self.bloom_weight * glow)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xs / max(w - 1, 1) - 0.5) * np.cos(self.gradient_angle) + (ys / max(h - 1, 1) - 0.5) * np.sin(
            self.gradient_angle
        )
        return _to_u8(x * (1.0 + self.gradient * ramp)[..., None])


UPSCALE_METHODS = {
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class Upscale(_Degradation):
    """A small master blown up: cubic/Lanczos (soft, ringing) or nearest (pixel art).

    Unlike :class:`Rescale` it goes much smaller and includes the blocky, perfectly sharp
    nearest-neighbour look of pixel art, which has no analogue in photographs.
    """

    name: ClassVar[str] = "upscale"
    factor: float
    method: str

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: NegativeConfig) -> Upscale:
        factor = float(rng.uniform(*cfg.upscale_factor))
        if rng.random() < cfg.upscale_nearest_prob:
            return cls(factor=factor, method="nearest")
        return cls(factor=factor, method="lanczos" if rng.random() < 0.5 else "cubic")

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        small = cv2.resize(
            image,
            (max(1, round(w * self.factor)), max(1, round(h * self.factor))),
            interpolation=cv2.INTER_AREA,
        )
        return cv2.resize(small, (w, h), interpolation=UPSCALE_METHODS[self.method])


DEGRADATIONS: dict[str, type] = {
    c.name: c for c in (Defocus, Jpeg, Noise, Rescale, FilmGrain, SharpenHalo, SoftLight, Upscale)
}


def sample_degradations(
    rng: np.random.Generator,
    cfg: NegativeConfig,
    *,
    max_count: int = 2,
    names: tuple[str, ...] | None = None,
) -> list[_Degradation]:
    """One or more distinct degradations (of ``names``, default all) in a random order
    (JPEG, if drawn, goes last, as a delivery pipeline would compress last)."""
    names = list(names or DEGRADATIONS)
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


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _large_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a large sigma on a reduced copy: same result for a smooth glow,
    a fraction of the cost at 1024 px."""
    h, w = x.shape[:2]
    f = max(1, int(sigma // 4))
    small = cv2.resize(x, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / f, 0.5), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(x.shape)


def _disk_blur(x: np.ndarray, radius: float) -> np.ndarray:
    r = max(1, round(radius))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(np.float32)
    return cv2.filter2D(x, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT_101).reshape(x.shape)


def portrait_bokeh(
    image: np.ndarray, subject: np.ndarray, rng: np.random.Generator, cfg: NegativeConfig
) -> tuple[np.ndarray, dict]:
    """Portrait-mode shallow depth of field: a disk-blurred background behind a sharp subject.

    Deliberate softness next to a sharp subject is the hardest confusion with a partially
    motion-blurred image, so it is a hard negative (empty mask). It needs the subject matte
    (float32 HxW in [0, 1]) and is therefore not one of :data:`DEGRADATIONS`. The
    background is blurred by normalised convolution over background pixels only, so the
    subject's colours do not bleed into it, and in linear light, so highlights bloom into
    discs as through a lens. Where ``subject`` is 1 the pixels are returned unchanged;
    the matte is only feathered outwards.
    """
    radius = float(rng.uniform(*cfg.bokeh_radius_px))
    depth = bool(rng.random() < cfg.bokeh_depth_prob)
    feather = float(rng.uniform(*cfg.bokeh_feather_px))
    h, w = image.shape[:2]
    matte = np.clip(subject.astype(np.float32), 0.0, 1.0)
    lin = (image.astype(np.float32) / 255.0) ** 2.2
    bg_weight = 1.0 - matte

    def blur_background(r: float) -> np.ndarray:
        num = _disk_blur(lin * bg_weight[..., None], r)
        den = _disk_blur(bg_weight, r)[..., None]
        return np.where(den > 1e-3, num / np.maximum(den, 1e-3), lin)

    far = blur_background(radius)
    if depth:
        # Nearer the subject, nearer its focal plane: the disc shrinks towards it.
        dist = cv2.distanceTransform((matte < 0.5).astype(np.uint8), cv2.DIST_L2, 5)
        t = np.clip(dist / (0.25 * min(h, w)), 0.0, 1.0)[..., None]
        near = blur_background(max(1.0, radius / 3))
        background = (1.0 - t) * near + t * far
    else:
        background = far
    alpha = np.maximum(matte, cv2.GaussianBlur(matte, (0, 0), feather))[..., None]
    # Disk filtering rounds a hair below zero on dark edges: clamp before the gamma root.
    soft = np.clip(background, 0.0, 1.0) ** (1 / 2.2) * 255.0
    out = alpha * image.astype(np.float32) + (1.0 - alpha) * soft
    out = np.where(alpha >= 1.0, image, np.clip(np.round(out), 0, 255)).astype(np.uint8)
    record = {
        "type": "bokeh",
        "radius_px": round(radius, 3),
        "depth_varying": depth,
        "feather_px": round(feather, 3),
    }
    return out, record
