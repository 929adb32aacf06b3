"""Alpha-aware compositing of a blurred instance, and the ground truth it yields.

The moving object is modelled as a premultiplied layer over a background with the object
removed: ``out = P' + (1 - a') · B``, where ``P'``/``a'`` are the blurred premultiplied
colour and alpha and ``B`` is the image with the object's footprint filled in. Using the
original image as ``B`` would let the sharp object show through its own smear (a ghost
of the hard edge), and a hard mask blend would leave a seam; either way the network could
learn the mask edge instead of the blur. Where coverage is cut *inside* an object
(partial coverage, edge ring), the blend weight is feathered with a width that grows
with the blur extent, so a cut never has a sharper step than the blur itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from model_training.synth.blur import BlurParams
from model_training.synth.config import CompositeConfig


@dataclass
class InstanceBlur:
    """What blurring one instance did: the new image, its label and extent, or nothing."""

    image: np.ndarray
    label: np.ndarray
    extent_px: np.ndarray
    visible: bool
    visible_fraction: float


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def u8_to_linear(image: np.ndarray) -> np.ndarray:
    """A uint8 sRGB image as float32 linear light, where exposures and blurs add up."""
    return srgb_to_linear(image.astype(np.float32) / 255.0)


def linear_to_u8(lin: np.ndarray) -> np.ndarray:
    """Linear light back to uint8 sRGB, clipped and rounded."""
    return np.clip(np.round(linear_to_srgb(lin) * 255.0), 0, 255).astype(np.uint8)


def fill_background(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill ``hole`` (bool) from its surroundings with a push-pull pyramid.

    Only a smooth guess is needed (it shows through where the smeared object is
    semi-transparent), and push-pull is linear-time and never fails, unlike exemplar
    inpainting.
    """
    known = (~hole).astype(np.float32)
    if known.min() > 0:
        return image.copy()
    if known.max() == 0:
        return np.full_like(image, image.mean(axis=(0, 1)))
    levels = []
    img, w = image * known[..., None], known
    while min(w.shape) > 2 and w.min() < 1e-3:
        levels.append((img, w))
        img, w = cv2.pyrDown(img), cv2.pyrDown(w)
        if img.ndim == 2:
            img = img[..., None]
    filled = img / np.maximum(w, 1e-6)[..., None]
    if (w <= 1e-6).any():
        mean = img.reshape(-1, img.shape[-1]).sum(0) / max(float(w.sum()), 1e-6)
        filled[w <= 1e-6] = mean
    for img_l, w_l in reversed(levels):
        up = cv2.pyrUp(filled, dstsize=(w_l.shape[1], w_l.shape[0]))
        if up.ndim == 2:
            up = up[..., None]
        own = img_l / np.maximum(w_l, 1e-6)[..., None]
        mix = np.clip(w_l, 0.0, 1.0)[..., None]
        filled = mix * own + (1 - mix) * up
    return np.where(hole[..., None], filled, image).astype(np.float32)


def feather(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-soften a coverage field so a cut has no hard step."""
    if sigma <= 0:
        return field.astype(np.float32)
    return cv2.GaussianBlur(field.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)


def feather_sigma(extent: float, cfg: CompositeConfig) -> float:
    return cfg.feather_base_px + cfg.feather_per_extent * extent


def partial_region(alpha: np.ndarray, rng: np.random.Generator, size: tuple[float, float]) -> np.ndarray:
    """A random sub-region of an instance: a half-plane or ellipses inside its bounding box.

    A half-plane mimics one part of a body moving while the rest holds still (a hand, the
    head); ellipses give blobs. The field spans the whole crop (not only the instance), so
    the moving part's smear outside the instance stays inside it.
    """
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.5)
    field = np.zeros((h, w), np.float32)
    if xs.size == 0:
        return field
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    bw, bh = max(x1 - x0, 1), max(y1 - y0, 1)
    if rng.random() < 0.4:
        theta = rng.uniform(0, 2 * math.pi)
        nx, ny = math.cos(theta), math.sin(theta)
        proj = (xs - xs.mean()) * nx + (ys - ys.mean()) * ny
        cut = np.quantile(proj, rng.uniform(1 - size[1], 1 - size[0]))
        gy, gx = np.mgrid[0:h, 0:w]
        field[((gx - xs.mean()) * nx + (gy - ys.mean()) * ny) >= cut] = 1.0
        return field
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(0, xs.size))
        ax = max(2, int(bw * rng.uniform(*size) / 2))
        ay = max(2, int(bh * rng.uniform(*size) / 2))
        cv2.ellipse(field, (int(xs[i]), int(ys[i])), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    return field


def blur_instance(
    image: np.ndarray,
    alpha: np.ndarray,
    blur: BlurParams,
    coverage: np.ndarray | None,
    cfg: CompositeConfig,
) -> InstanceBlur:
    """Blur one instance of ``image`` (float32 RGB in [0, 1], sRGB) and composite it back.

    ``alpha`` is the instance's soft matte in [0, 1]; ``coverage`` is None for full
    coverage or a 0/1 field for a partial one. Work happens on a crop around the
    instance with room for the smear and the feather, so small instances cost little.
    Returns the composited image, the binary label (feathered blend weight >= 0.5), the
    per-pixel extent in pixels, and whether the change is visible at 8 bits.
    """
    h, w = alpha.shape
    empty = InstanceBlur(image, np.zeros((h, w), bool), np.zeros((h, w), np.float32), False, 0.0)
    ys, xs = np.nonzero(alpha > 1e-3)
    if xs.size == 0:
        return empty
    base_sigma = feather_sigma(blur.reach(), cfg)
    margin = int(math.ceil(blur.reach() + 3 * base_sigma)) + 2
    x0, y0 = max(0, xs.min() - margin), max(0, ys.min() - margin)
    x1, y1 = min(w, xs.max() + 1 + margin), min(h, ys.max() + 1 + margin)
    crop = image[y0:y1, x0:x1]
    a = alpha[y0:y1, x0:x1].astype(np.float32)
    lin = srgb_to_linear(crop) if cfg.linear_light else crop.astype(np.float32)

    out = blur.apply(np.concatenate([lin * a[..., None], a[..., None]], axis=2))
    p_blur, a_blur = out.layer[..., :3], np.clip(out.layer[..., 3], 0.0, 1.0)
    background = fill_background(lin, cv2.dilate((a > 1e-3).astype(np.uint8), np.ones((5, 5))) > 0)
    moved = p_blur + (1.0 - a_blur)[..., None] * background

    extent = np.broadcast_to(np.asarray(out.extent, np.float32), a.shape).astype(np.float32)
    cut = out.band
    if coverage is not None:
        cov = coverage[y0:y1, x0:x1].astype(np.float32)
        cut = cov if cut is None else cut * cov
    footprint = np.maximum(a, a_blur)
    if cut is None:
        weight = np.ones_like(a)
    else:
        weight = np.clip(feather(cut, feather_sigma(float(extent.max()), cfg)), 0.0, 1.0)
    composed = lin + weight[..., None] * (moved - lin)
    composed = linear_to_srgb(composed) if cfg.linear_light else np.clip(composed, 0.0, 1.0)

    label = (weight * footprint) >= 0.5
    changed = np.abs(np.round(composed * 255) - np.round(crop * 255)).max(axis=2) >= cfg.visible_delta
    n_label = int(label.sum())
    n_visible = int((changed & label).sum())
    fraction = n_visible / n_label if n_label else 0.0
    if n_label == 0 or n_visible < cfg.min_visible_pixels or fraction < cfg.min_visible_fraction:
        return InstanceBlur(image, empty.label, empty.extent_px, False, fraction)

    result = image.copy()
    touched = weight > 1e-4
    region = result[y0:y1, x0:x1]
    region[touched] = composed[touched]
    full_label = np.zeros((h, w), bool)
    full_label[y0:y1, x0:x1] = label
    full_extent = np.zeros((h, w), np.float32)
    full_extent[y0:y1, x0:x1] = np.where(label, extent, 0.0)
    return InstanceBlur(result, full_label, full_extent, True, fraction)
