"""Whole-subject foreground: GrabCut seeded by spectral-residual saliency and a centre prior."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import (
    _check_image,
    _components,
    _ellipse_kernel,
    _image_digest,
    _LastImageCache,
    _to_u8,
)
from qc_worker.detector.saliency import spectral_residual

logger = logging.getLogger(__name__)

# GrabCut's GMM initialisation runs k-means on OpenCV's global RNG; reseeding it makes the
# matte a function of the image alone.
_GRABCUT_RNG_SEED = 0x5EED


def spectral_residual_saliency(gray: np.ndarray, size: int = 64) -> np.ndarray:
    """Hou & Zhang (2007) saliency in [0, 1] at ``size`` x ``size``: screening's own
    (:func:`qc_worker.detector.saliency.spectral_residual`), normalised for blending with
    the centre prior."""
    small = cv2.resize(gray.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    if float(small.std()) < 1e-3:
        return np.zeros((size, size), np.float32)
    saliency = spectral_residual(small, size / 24)
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
            for component, _ in _components(full, self.min_area_fraction * height * width, self.max_instances)
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
