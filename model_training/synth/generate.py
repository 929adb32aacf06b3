"""Blur the instances of one image: coverage modes, blur types, mixing, ground truth.

This is the per-image core of the synthesis; where the image comes from, how it is
cropped and scaled, and what is delivered to training is :mod:`model_training.data`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from model_training.synth.blur import BLUR_TYPES, BlurParams
from model_training.synth.composite import blur_instance, partial_region
from model_training.synth.config import ExtentConfig, SynthConfig
from model_training.synth.instances import Instance

COVERAGE_MODES = ("sharp", "full", "partial")


@dataclass
class Blurred:
    """An image after synthesis with its labels at the same resolution.

    ``label`` is where motion blur was applied; ``extent_px`` the blur extent in pixels
    there (0 elsewhere); ``record`` every parameter drawn, JSON-serialisable, so a sample
    can be explained and re-made.
    """

    image: np.ndarray
    label: np.ndarray
    extent_px: np.ndarray
    record: dict = field(default_factory=dict)


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform in [lo, hi]: extents, scales and gains matter as ratios, not differences."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_extent(rng: np.random.Generator, cfg: ExtentConfig) -> float:
    lo, hi = cfg.strong_px if rng.random() < cfg.strong_prob else cfg.mild_px
    return loguniform(rng, lo, hi)


def sample_blur(rng: np.random.Generator, cfg: SynthConfig, name: str, instance_mask: np.ndarray) -> BlurParams:
    """Draw the parameters of blur type ``name`` sized for this instance."""
    ys, xs = np.nonzero(instance_mask)
    half_diag = 0.5 * math.hypot(float(np.ptp(xs)) if xs.size else 0.0, float(np.ptp(ys)) if ys.size else 0.0)
    return BLUR_TYPES[name].sample(rng, sample_extent(rng, cfg.extent), half_diag)


def pick_blur_type(rng: np.random.Generator, cfg: SynthConfig) -> str:
    names = cfg.allowed_blur_types()
    weights = np.array([cfg.blur_weights.get(n, 1.0) for n in names], np.float64)
    if weights.sum() <= 0:
        weights = np.ones(len(names))
    return str(names[int(rng.choice(len(names), p=weights / weights.sum()))])


def pick_coverage(rng: np.random.Generator, cfg: SynthConfig) -> str:
    c = cfg.coverage
    p = np.array([c.sharp, c.full, c.partial], np.float64)
    return COVERAGE_MODES[int(rng.choice(3, p=p / p.sum()))]


def soft_alpha(mask: np.ndarray) -> np.ndarray:
    """Anti-alias a binary instance mask into a matte (a hard 0/1 matte would alias when warped)."""
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.7)


def blur_instances(
    image: np.ndarray,
    instances: list[Instance],
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    coverages: list[str] | None = None,
) -> Blurred:
    """Blur each instance by its own coverage mode and blur type, one after another.

    Instances are composited in order, each over the result of the previous one, so
    overlapping parts (a face inside a foreground) combine as they would in a scene. In
    curriculum stages before the last, all blurred instances of an image share one blur
    type; mixing types within an image is the advanced stage (paper 3.5). An instance
    whose blur changed nothing visibly is relabelled sharp and its pixels restored.
    """
    h, w = image.shape[:2]
    current = image.astype(np.float32) / 255.0
    label = np.zeros((h, w), bool)
    extent = np.zeros((h, w), np.float32)
    shared_type = None if cfg.mixed_instances else pick_blur_type(rng, cfg)
    records = []
    changed = False
    for i, inst in enumerate(instances):
        mode = coverages[i] if coverages is not None else pick_coverage(rng, cfg)
        rec: dict = {"kind": inst.kind, "coverage": mode}
        records.append(rec)
        if mode == "sharp":
            continue
        name = shared_type or pick_blur_type(rng, cfg)
        params = sample_blur(rng, cfg, name, inst.mask)
        alpha = soft_alpha(inst.mask)
        cover = partial_region(alpha, rng, cfg.coverage.partial_size) if mode == "partial" else None
        out = blur_instance(current, alpha, params, cover, cfg.composite)
        rec.update(
            blur=params.to_dict(),
            visible=out.visible,
            visible_fraction=round(out.visible_fraction, 4),
        )
        if not out.visible:
            continue
        current = out.image
        changed = True
        label |= out.label
        extent = np.maximum(extent, out.extent_px)
    result = np.clip(np.round(current * 255.0), 0, 255).astype(np.uint8) if changed else image.copy()
    return Blurred(result, label, extent, {"instances": records})
