"""Crop-safe regions of interest: for each aspect ratio, the largest crop with little blur.

For each configured aspect ratio ``W:H`` the search looks at crops of that aspect whose
sides run from the largest that fits the image (scale 1) down to ``min_fraction`` of it,
in ``scales`` even steps, each at a grid of up to ``positions`` x ``positions`` places
(spread over the whole image and, separately, over the places that keep the faces inside,
so a narrow feasible range is never stepped over). Blur inside every candidate is read
from one integral image of the binary blur mask (``prob >= threshold``), so it is an exact
pixel count, and all candidates of every size are evaluated at once with numpy.

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

import numpy as np

from qc_worker.config import RoiConfig, parse_aspect
from qc_worker.detector.boxes import Box, box_area, clip_box, expand_box, integral_image, integral_sums, union_box
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
    """Integral image of a bool mask (HxW), or of several at once (HxWxC)."""
    return integral_image(np.ascontiguousarray(blurred, dtype=bool).view(np.uint8), max_value=1)


def _spread(start: np.ndarray, stop: np.ndarray, n: int) -> np.ndarray:
    """``np.linspace(start[i], stop[i], n)`` for each row i, bit for bit (``n`` > 1), or
    the midpoints (``n`` == 1)."""
    if n == 1:
        return ((start + stop) / 2)[:, None]
    step = (stop - start) / (n - 1)
    out = np.arange(n)[None, :] * step[:, None] + start[:, None]
    out[:, -1] = stop
    return out


def _axis_positions(sizes: np.ndarray, extent: int, lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Starts along one axis, one sorted row per crop size: ``n`` spread over
    ``[0, extent - size]`` and ``n`` over the feasible ``[lo, hi]`` (the first ``n`` again
    where that range is empty). Repeats are kept: they cost less than removing them per row
    and never change the choice, since sorted repeats sit beside their first copy."""
    full = np.round(_spread(np.zeros(len(sizes)), (extent - sizes).astype(np.float64), n))
    if np.array_equal(lo, 0) and np.array_equal(hi, extent - sizes):
        return full.astype(np.int64)  # nothing to keep inside: the feasible range is the whole axis
    feasible = np.round(_spread(lo.astype(np.float64), hi.astype(np.float64), n))
    feasible = np.where((lo <= hi)[:, None], feasible, full)
    return np.sort(np.concatenate([full, feasible], axis=1), axis=1).astype(np.int64)


def best_crop(
    integral: np.ndarray,
    aspect: str,
    *,
    keep: Box | None = None,
    focus: Box | None = None,
    config: RoiConfig = RoiConfig(),
    min_observable_fraction: float = 0.0,
) -> Roi:
    """The chosen crop of ``aspect`` (see the module doc) given the blur mask's integral
    image (:func:`blur_integral`; with a second channel, the observable map's, else every
    pixel counts), the box that must stay inside (``keep``, already margined) and the
    foreground box that steers the choice (``focus``). Both maps' sums come from one
    gather: the same corners of both.

    Tens of thousands of candidates per aspect make this a third of the analysis step
    unless each costs few operations: every size and place is one element of the same
    arrays, what depends on one axis is computed per axis, and the tie-breaking keys
    (foreground held, distance) only for the candidates still tied on the first ones."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    if integral.ndim == 3 and integral.shape[2] != 2:
        raise ValueError(f"integral must be (H+1)x(W+1) or (H+1)x(W+1)x2, got shape {integral.shape}")
    if height <= 0 or width <= 0:
        raise ValueError("empty image")
    ratio = parse_aspect(aspect)
    max_w = min(float(width), height * ratio)
    max_h = max_w / ratio
    scales = np.linspace(1.0, config.min_fraction, config.scales) if config.scales > 1 else np.array([1.0])
    if keep is not None and box_area(keep) == 0:
        keep = None
    fx0, fy0, fx1, fy1 = focus if focus is not None and box_area(focus) > 0 else (0, 0, 0, 0)
    focus_area = box_area((fx0, fy0, fx1, fy1))
    cx, cy = ((fx0 + fx1) / 2, (fy0 + fy1) / 2) if focus_area else (width / 2, height / 2)

    ws = np.minimum(width, np.maximum(1, np.round(max_w * scales))).astype(np.int64)
    hs = np.minimum(height, np.maximum(1, np.round(max_h * scales))).astype(np.int64)
    if keep is not None:
        kx0, ky0, kx1, ky1 = keep
        xlo, xhi = np.maximum(0, kx1 - ws), np.minimum(width - ws, kx0)
        ylo, yhi = np.maximum(0, ky1 - hs), np.minimum(height - hs, ky0)
    else:
        xlo, xhi, ylo, yhi = np.zeros_like(ws), width - ws, np.zeros_like(hs), height - hs
    # Candidates as (size, y, x) arrays, flattened size-major for the module doc's
    # tie-breaks; what depends on one axis only is worked out per axis and broadcast.
    xs = _axis_positions(ws, width, xlo, xhi, config.positions)[:, None, :]
    ys = _axis_positions(hs, height, ylo, yhi, config.positions)[:, :, None]
    w3, h3 = ws[:, None, None], hs[:, None, None]
    shape = (len(scales), ys.shape[1], xs.shape[2])
    bottom, right = ys + h3, xs + w3
    sums = integral_sums(integral, ys, xs, bottom, right)
    area = np.broadcast_to(w3 * h3, shape).ravel()
    if integral.ndim == 3:
        blurred, seen = sums[..., 0].ravel(), sums[..., 1].ravel()
    else:
        blurred, seen = sums.ravel(), area
    if keep is not None:
        keeps = ((ys <= keep[1]) & (bottom >= keep[3])) & ((xs <= keep[0]) & (right >= keep[2]))
        keeps = np.broadcast_to(keeps, shape).ravel()
    else:
        keeps = np.ones(area.shape, bool)
    enough = (seen > 0) & (seen >= min_observable_fraction * area)
    frac = np.where(enough, blurred / np.maximum(seen, 1), 0.0)
    safe = keeps & (frac <= config.max_blur_fraction)

    # The ranking keys of the module doc, the last ones only for the candidates still tied.
    if safe.any():
        tied = safe & (area == area[safe].max())
    else:
        tied = keeps if keeps.any() else np.ones(area.shape, bool)
        tied = tied & (frac == frac[tied].min())
        tied &= area == area[tied].max()
    idx = np.flatnonzero(tied)
    X = np.broadcast_to(xs, shape).ravel()[idx]
    Y = np.broadcast_to(ys, shape).ravel()[idx]
    W = np.broadcast_to(w3, shape).ravel()[idx]
    H = np.broadcast_to(h3, shape).ravel()[idx]
    if focus_area:
        ix = np.clip(np.minimum(X + W, fx1) - np.maximum(X, fx0), 0, None)
        iy = np.clip(np.minimum(Y + H, fy1) - np.maximum(Y, fy0), 0, None)
        held = ix * iy / focus_area
    else:
        held = np.zeros(idx.shape)
    dist = np.hypot(X + W / 2 - cx, Y + H / 2 - cy)
    # np.lexsort: the last key is the primary one; it is stable, so ties keep candidate order.
    pick = np.lexsort((dist, frac[idx], -held))[0]
    i = idx[pick]
    x, y, w, h = int(X[pick]), int(Y[pick]), int(W[pick]), int(H[pick])
    return Roi(
        aspect=aspect,
        bbox=(x, y, x + w, y + h),
        blur_fraction=float(frac[i]),
        safe=bool(safe[i]),
        area_fraction=w * h / (width * height),
        keeps_faces=bool(keeps[i]),
        reason=unsafe_reason(aspect, float(frac[i]), bool(keeps[i]), config.max_blur_fraction),
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
    if observable is not None:
        if observable.shape != prob.shape:
            raise ValueError(f"observable shape {observable.shape} differs from prob {prob.shape}")
        blurred &= observable
        integral = blur_integral(np.dstack((blurred, observable)))
    else:
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
            min_observable_fraction=min_observable_fraction,
        )
        for aspect in config.aspects
    ]
