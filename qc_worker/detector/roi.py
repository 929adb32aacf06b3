"""Crop-safe regions of interest: for each aspect ratio, the largest crop with little blur.

For each configured aspect ratio ``W:H`` the search looks at crops of that aspect whose
sides run from the largest that fits the image (scale 1) down to ``min_fraction`` of it,
in ``scales`` even steps, each at a grid of up to ``positions`` x ``positions`` places
(spread over the whole image and, separately, over the places that keep the faces inside,
so a narrow feasible range is never stepped over). Blur inside every candidate is read
from one integral image of the binary blur mask (``prob >= threshold``), so it is an exact
pixel count, and all candidates of a scale are evaluated at once with numpy.

With an ``observable`` map (:mod:`qc_worker.detector.observable`) a pixel is blurred only
where blur can be seen, and a crop's blurred fraction is taken over its observable pixels
(zero when fewer than ``min_observable_fraction`` of them are): a crop of mostly plain sky
is judged by its textured part, and never made unsafe by the sky.

A crop is **safe** when its blurred fraction is ``<= max_blur_fraction`` and it holds every
face box (each grown by ``face_margin`` of its size on every side, clipped to the image).
The chosen crop is:

* when some candidate is safe: the largest safe one; among equally large ones, the one
  holding most of the salient foreground box, then the least blurred, then the one whose
  centre is nearest the foreground's centre (the image's when there is no foreground);
* otherwise (``safe=False``): preferring crops that hold the faces, the least blurred;
  among equally blurred ones the largest, then by the same foreground rules.

The foreground steers the choice but is not required inside: the saliency box is crude
and may not fit a crop of every aspect.

An unsafe crop says why in ``reason``: the faces do not fit that aspect, or its blurred
share is over the limit. The share is printed with as many decimals as it takes to differ
from the limit (``5.04% > 5%``), so a crop shown at the limit is always a safe one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from qc_worker.config import RoiConfig, parse_aspect
from qc_worker.detector.boxes import Box, box_area, clip_box, expand_box, union_box
from qc_worker.detector.faces import Foreground

__all__ = [
    "Roi",
    "RoiConfig",
    "best_crop",
    "blur_integral",
    "crop_safe_rois",
    "parse_aspect",
    "percent_beyond",
    "unsafe_reason",
]


@dataclass(frozen=True)
class Roi:
    """The chosen crop of one aspect ratio."""

    aspect: str
    bbox: Box
    blur_fraction: float
    safe: bool
    area_fraction: float
    keeps_faces: bool
    #: Why the crop is unsafe (None when it is safe); see the module doc.
    reason: str | None = None

    def to_dict(self) -> dict:
        return {
            "aspect": self.aspect,
            "bbox": [int(v) for v in self.bbox],
            "blur_fraction": float(self.blur_fraction),
            "safe": bool(self.safe),
            "area_fraction": float(self.area_fraction),
            "keeps_faces": bool(self.keeps_faces),
            "reason": self.reason,
        }


def percent_beyond(value: float, limit: float) -> str:
    """``value`` as a percentage with the fewest decimals (up to 3) that keep it apart from
    ``limit`` when it differs, so that a share printed over a limit never reads as equal."""
    for decimals in range(4):
        shown = round(value * 100, decimals)
        if value == limit or shown != round(limit * 100, decimals):
            break
    return f"{shown:.{decimals}f}%"


def unsafe_reason(aspect: str, blur_fraction: float, keeps_faces: bool, max_blur_fraction: float) -> str | None:
    """Why a crop with these facts is unsafe, or None when it is safe (the rule of the module doc)."""
    if not keeps_faces:
        return f"faces do not fit {aspect}"
    if blur_fraction > max_blur_fraction:
        return f"blur {percent_beyond(blur_fraction, max_blur_fraction)} > {max_blur_fraction * 100:g}%"
    return None


def blur_integral(blurred: np.ndarray) -> np.ndarray:
    """Integral image ((H+1) x (W+1), int32 or int64 beyond 2**31 pixels) of a bool mask."""
    mask = np.ascontiguousarray(blurred, dtype=bool).view(np.uint8)  # 0/1, whatever came in
    depth = cv2.CV_32S if mask.size < 2**31 else cv2.CV_64F
    integral = cv2.integral(mask, sdepth=depth)
    return integral if depth == cv2.CV_32S else integral.astype(np.int64)


def _box_sums(integral: np.ndarray, X: np.ndarray, Y: np.ndarray, w: int, h: int) -> np.ndarray:
    return integral[Y + h, X + w].astype(np.int64) - integral[Y, X + w] - integral[Y + h, X] + integral[Y, X]


def _axis_positions(size: int, extent: int, lo: int, hi: int, n: int) -> np.ndarray:
    """Starts along one axis: ``n`` spread over ``[0, extent - size]`` and ``n`` over the
    feasible ``[lo, hi]`` (when not empty)."""
    full = np.linspace(0, extent - size, n) if n > 1 else np.array([(extent - size) / 2])
    parts = [np.round(full)]
    if lo <= hi:
        parts.append(np.round(np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])))
    return np.unique(np.concatenate(parts).astype(np.int64))


def best_crop(
    integral: np.ndarray,
    aspect: str,
    *,
    keep: Box | None = None,
    focus: Box | None = None,
    config: RoiConfig = RoiConfig(),
    observed: np.ndarray | None = None,
    min_observable_fraction: float = 0.0,
) -> Roi:
    """The chosen crop of ``aspect`` (see the module doc) given the blur mask's integral
    image, the box that must stay inside (``keep``, already margined), the foreground
    box that steers the choice (``focus``) and the observable map's integral image
    (``observed``; None: every pixel counts)."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    if height <= 0 or width <= 0:
        raise ValueError("empty image")
    ratio = parse_aspect(aspect)
    max_w = min(float(width), height * ratio)
    max_h = max_w / ratio
    scales = np.linspace(1.0, config.min_fraction, config.scales) if config.scales > 1 else [1.0]
    if keep is not None and box_area(keep) == 0:
        keep = None
    fx0, fy0, fx1, fy1 = focus if focus is not None and box_area(focus) > 0 else (0, 0, 0, 0)
    focus_area = box_area((fx0, fy0, fx1, fy1))
    cx, cy = ((fx0 + fx1) / 2, (fy0 + fy1) / 2) if focus_area else (width / 2, height / 2)

    columns: list[list[np.ndarray]] = [[] for _ in range(9)]
    for scale in scales:
        w = int(min(width, max(1, round(max_w * scale))))
        h = int(min(height, max(1, round(max_h * scale))))
        if keep is not None:
            kx0, ky0, kx1, ky1 = keep
            xlo, xhi = max(0, kx1 - w), min(width - w, kx0)
            ylo, yhi = max(0, ky1 - h), min(height - h, ky0)
        else:
            xlo, xhi, ylo, yhi = 0, width - w, 0, height - h
        xs = _axis_positions(w, width, xlo, xhi, config.positions)
        ys = _axis_positions(h, height, ylo, yhi, config.positions)
        X, Y = np.meshgrid(xs, ys)
        X, Y = X.ravel(), Y.ravel()
        blurred = _box_sums(integral, X, Y, w, h)
        seen = np.full(X.shape, w * h, np.int64) if observed is None else _box_sums(observed, X, Y, w, h)
        if keep is not None:
            keeps = (X <= keep[0]) & (Y <= keep[1]) & (X + w >= keep[2]) & (Y + h >= keep[3])
        else:
            keeps = np.ones(X.shape, bool)
        if focus_area:
            ix = np.clip(np.minimum(X + w, fx1) - np.maximum(X, fx0), 0, None)
            iy = np.clip(np.minimum(Y + h, fy1) - np.maximum(Y, fy0), 0, None)
            held = ix * iy / focus_area
        else:
            held = np.zeros(X.shape)
        dist = np.hypot(X + w / 2 - cx, Y + h / 2 - cy)
        for col, values in zip(
            columns,
            (X, Y, np.full(X.shape, w), np.full(X.shape, h), blurred, keeps, held, dist, seen),
            strict=True,
        ):
            col.append(values)
    X, Y, W, H, B, K, F, D, S = (np.concatenate(c) for c in columns)
    area = W * H
    enough = (S > 0) & (S >= min_observable_fraction * area)
    frac = np.where(enough, B / np.maximum(S, 1), 0.0)
    safe = K & (frac <= config.max_blur_fraction)
    if safe.any():
        idx = np.flatnonzero(safe)
        # np.lexsort: the last key is the primary one.
        order = np.lexsort((D[idx], frac[idx], -F[idx], -area[idx]))
        i = idx[order[0]]
    else:
        i = np.lexsort((D, -F, -area, frac, ~K))[0]
    x, y, w, h = int(X[i]), int(Y[i]), int(W[i]), int(H[i])
    return Roi(
        aspect=aspect,
        bbox=(x, y, x + w, y + h),
        blur_fraction=float(frac[i]),
        safe=bool(safe[i]),
        area_fraction=w * h / (width * height),
        keeps_faces=bool(K[i]),
        reason=unsafe_reason(aspect, float(frac[i]), bool(K[i]), config.max_blur_fraction),
    )


def crop_safe_rois(
    prob: np.ndarray,
    threshold: float,
    *,
    faces: Sequence[Box] = (),
    foreground: Foreground | Box | None = None,
    config: RoiConfig = RoiConfig(),
    observable: np.ndarray | None = None,
    min_observable_fraction: float = 0.0,
) -> list[Roi]:
    """One :class:`Roi` per ``config.aspects`` (in that order) for the blur probability
    map ``prob`` (HxW) thresholded at ``threshold``; ``faces`` must stay inside a safe crop
    and ``foreground`` steers the choice; ``observable`` (bool HxW) limits blur to where it
    can be seen (module doc). Boxes are in ``prob``'s pixels."""
    if prob.ndim != 2:
        raise ValueError(f"prob must be HxW, got shape {prob.shape}")
    height, width = prob.shape
    blurred = prob >= threshold
    observed = None
    if observable is not None:
        if observable.shape != prob.shape:
            raise ValueError(f"observable shape {observable.shape} differs from prob {prob.shape}")
        blurred &= observable
        observed = blur_integral(observable)
    integral = blur_integral(blurred)
    face_boxes = [expand_box(clip_box(f, width, height), config.face_margin, width, height) for f in faces]
    keep = union_box(face_boxes)
    if isinstance(foreground, Foreground):
        focus: Box | None = clip_box(foreground.box, width, height)
    elif foreground is not None:
        focus = clip_box(foreground, width, height)
    else:
        focus = keep
    return [
        best_crop(
            integral,
            aspect,
            keep=keep,
            focus=focus,
            config=config,
            observed=observed,
            min_observable_fraction=min_observable_fraction,
        )
        for aspect in config.aspects
    ]
