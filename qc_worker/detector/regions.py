"""From a blur probability map to regions, per-region verdicts and the image verdict.

Inputs are the detector's maps for one image, both float32 HxW in [0, 1] at the image's
resolution: ``prob`` (probability that a pixel is motion-blurred) and ``intensity`` (how
strong the blur is). A pixel is *blurred* when ``prob >= threshold`` (the model version's
decision threshold, passed in by the caller).

Regions (all boxes ``(x0, y0, x1, y1)``, exclusive ends, image pixels):

* ``component``: a connected (8-neighbour) blob of blurred pixels of at least
  ``min_component_fraction`` of the image, at most ``max_components`` of them, largest first.
* ``face``: each face box (from :mod:`qc_worker.detector.faces` or given by the caller).
* ``foreground``: the salient foreground's pixels (its mask when it has one, else its box).
* ``grid``: the cells of a ``grid_rows`` x ``grid_cols`` grid over the image.

Blur can only be seen where there is texture (:mod:`qc_worker.detector.observable`). When
the caller passes the ``observable`` map, a pixel is blurred only where it is also
observable, and every share is taken over observable pixels: a face whose textured half
is blurred has coverage 0.5 whether or not its cheeks are flat, and a plain sky is never a
reason to review or reject. A region (or image) whose observable pixels are fewer than
``min_observable_fraction`` of its own has no blur evidence: coverage 0.

Each region reports ``area_fraction`` (its pixels / image pixels), ``coverage`` (the
fraction of its observable pixels that are blurred; 1.0 for a component),
``mean_probability`` (over its observable pixels), ``mean_intensity`` (over its *blurred*
pixels, 0.0 when it has none) and a
verdict: ``blurred`` when ``coverage >= `` the limit of its kind (``face_blur_limit``,
much lower than ``foreground_blur_limit`` and ``grid_blur_limit``; components are always
blurred), else ``sharp``.

The image verdict (faces weigh most):

* **reject** when any face region is blurred (``coverage >= face_blur_limit``) and its
  detector is sure of it (``confidence >= face_reject_confidence``: a 0.3-confidence
  "face" on a textured wall must not reject an image; an unsure blurred face sends it to
  review), or the blurred fraction of the whole image is ``>= reject_area_fraction``, or,
  in an image without a face region, the foreground's coverage is ``>= foreground_reject_limit``
  (the foreground is then the subject a viewer looks at, as a face is where there is one);
* otherwise **review** when the blurred fraction is ``>= review_area_fraction``, or some
  face has ``coverage >= face_review_limit``, or the foreground region is blurred, or some
  grid cell is blurred, or some component covers ``>= review_component_fraction`` of the
  image with ``mean_probability >= review_probability``;
* otherwise **review** when the model version has a frame threshold and the median
  probability over the image's observable pixels (``frame_median``) is at least it; where
  the model version reads the frame at smaller sizes too, the highest of those medians
  counts (:mod:`qc_worker.detector.scales`);
* otherwise **pass**.

The frame rule is there for blur over the whole frame (camera shake, a pan, the frames of
a title's video): it lifts the probability of every textured pixel a little, often without
pushing enough of them over the pixel threshold for an area rule, while a sharp photo's
median stays near zero whatever its few hot pixels do. It never rejects: a frame that
moved a little is for a person to judge. Calibration (``qc-train calibrate``) chooses the
threshold with the pixel threshold; a checkpoint without one leaves the rule off.

So a blurred face of 2 % of the image rejects it, while a blurred background of the same
size at most sends it to review. ``score`` is how close the image is to a reject rule:
``max(blurred_fraction / reject_area_fraction, max face coverage / face_blur_limit)``
(without a face region, the foreground's coverage / ``foreground_reject_limit`` takes the
faces' place) clipped to [0, 1], an unsure face's share held at 0.99; it is 1.0 exactly when
a reject rule fired. ``reasons`` names every rule
that fired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np
from scipy import ndimage

from qc_worker.config import RegionConfig
from qc_worker.detector.boxes import Box, box_area, clip_box
from qc_worker.detector.faces import Foreground, face_confidence
from qc_worker.vocabulary import RegionKind, RegionVerdict
from qc_worker.vocabulary import Verdict as ImageVerdict

__all__ = [
    "ImageVerdict",
    "Region",
    "Evidence",
    "RegionConfig",
    "RegionKind",
    "RegionReport",
    "RegionVerdict",
    "analyse_regions",
    "blur_components",
    "frame_median",
    "grid_regions",
    "image_verdict",
    "semantic_regions",
    "worst_region",
]

R = TypeVar("R")


@dataclass(frozen=True)
class Region:
    """One region of an image and its blur statistics (see the module doc)."""

    kind: RegionKind
    label: str
    bbox: Box
    area_fraction: float
    coverage: float
    mean_probability: float
    mean_intensity: float
    verdict: RegionVerdict
    #: A face's detector confidence (1.0 for a box given by the caller); None for the others.
    confidence: float | None = None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "label": self.label,
            "bbox": [int(v) for v in self.bbox],
            "area_fraction": float(self.area_fraction),
            "coverage": float(self.coverage),
            "mean_probability": float(self.mean_probability),
            "mean_intensity": float(self.mean_intensity),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class RegionReport:
    """All regions of one image, its verdict and why."""

    regions: tuple[Region, ...]
    verdict: ImageVerdict
    worst_region: Region | None
    blurred_fraction: float
    score: float
    reasons: tuple[str, ...] = field(default=())
    #: Median probability over the observable pixels (0.0 without enough of them).
    frame_median: float = 0.0

    def of_kind(self, kind: RegionKind) -> list[Region]:
        return [r for r in self.regions if r.kind == kind]

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "score": float(self.score),
            "blurred_fraction": float(self.blurred_fraction),
            "frame_median": float(self.frame_median),
            "reasons": list(self.reasons),
            "worst_region": None if self.worst_region is None else self.worst_region.to_dict(),
            "regions": [r.to_dict() for r in self.regions],
        }


# --- helpers --------------------------------------------------------------------------


def _check_maps(prob: np.ndarray, intensity: np.ndarray, threshold: float) -> None:
    if prob.ndim != 2:
        raise ValueError(f"prob must be HxW, got shape {prob.shape}")
    if intensity.shape != prob.shape:
        raise ValueError(f"intensity shape {intensity.shape} differs from prob {prob.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")


@dataclass(frozen=True)
class Evidence:
    """Where blur can be seen: the observable map and how much of a region must be."""

    observable: np.ndarray | None = None
    min_fraction: float = 0.0


def _stats(
    prob: np.ndarray,
    intensity: np.ndarray,
    blurred: np.ndarray,
    box: Box,
    mask: np.ndarray | None = None,
    evidence: Evidence = Evidence(),
) -> tuple[float, float, float, float]:
    """(area_fraction, coverage, mean_probability, mean_intensity) of a box, or of the
    pixels of ``mask`` (full-image bool) inside the box; shares over observable pixels.

    The box's pixels are never gathered into new arrays: counts and masked means (OpenCV's,
    SIMD, in float64) read them in place, which keeps the nine grid cells, the faces and
    the foreground a small part of the analysis step."""
    x0, y0, x1, y1 = box
    total = prob.size
    keep = None if mask is None else mask[y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0) if keep is None else int(np.count_nonzero(keep))
    if area == 0:
        return 0.0, 0.0, 0.0, 0.0
    n = area
    if evidence.observable is not None:
        seen = evidence.observable[y0:y1, x0:x1]
        keep = seen if keep is None else keep & seen
        n = int(np.count_nonzero(keep))
        if n == 0 or n < evidence.min_fraction * area:
            return area / total, 0.0, 0.0, 0.0
    b = blurred[y0:y1, x0:x1]
    if keep is not None:
        b = b & keep
    nb = int(np.count_nonzero(b))
    p = np.asarray(prob[y0:y1, x0:x1], np.float32)
    mean_p = cv2.mean(p, mask=None if keep is None else keep.view(np.uint8))[0]
    mean_i = cv2.mean(np.asarray(intensity[y0:y1, x0:x1], np.float32), mask=b.view(np.uint8))[0] if nb else 0.0
    return area / total, nb / n, mean_p, mean_i


def _verdict(coverage: float, limit: float) -> RegionVerdict:
    return RegionVerdict.BLURRED if coverage >= limit else RegionVerdict.SHARP


def _limit(kind: RegionKind, config: RegionConfig) -> float:
    return {
        RegionKind.FACE: config.face_blur_limit,
        RegionKind.FOREGROUND: config.foreground_blur_limit,
        RegionKind.GRID: config.grid_blur_limit,
        RegionKind.COMPONENT: 0.0,
    }[kind]


# --- regions --------------------------------------------------------------------------


def blur_components(
    prob: np.ndarray,
    intensity: np.ndarray,
    threshold: float,
    min_area_fraction: float = RegionConfig().min_component_fraction,
    max_components: int | None = RegionConfig().max_components,
    *,
    _blurred: np.ndarray | None = None,
) -> list[Region]:
    """Connected components (8-neighbour) of ``prob >= threshold``, largest first.

    Components smaller than ``min_area_fraction`` of the image are dropped, and at most
    ``max_components`` kept (None: all). Each is a ``component`` Region: bbox, area
    fraction, coverage 1.0, mean probability and mean intensity over its pixels, verdict
    ``blurred``.
    """
    _check_maps(prob, intensity, threshold)
    blurred = prob >= threshold if _blurred is None else _blurred
    # Labels alone, then areas from the labelled pixels and boxes only where some component
    # is kept: OpenCV's WithStats variant costs five times its labelling at 960x540.
    count, labels = cv2.connectedComponents(blurred.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if count <= 1:
        return []
    areas = np.bincount(labels[blurred], minlength=count)
    min_pixels = max(1, int(np.ceil(min_area_fraction * prob.size)))
    ids = np.flatnonzero(areas[1:] >= min_pixels) + 1
    ids = ids[np.argsort(-areas[ids], kind="stable")]
    if max_components is not None:
        ids = ids[:max_components]
    if ids.size == 0:
        return []
    boxes = ndimage.find_objects(labels, max_label=int(ids.max()))
    prob32 = np.asarray(prob, np.float32)
    intensity32 = np.asarray(intensity, np.float32)
    out = []
    for k, cid in enumerate(ids):
        rows, cols = boxes[cid - 1]
        x, y, w, h, area = cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start, int(areas[cid])
        # Means over the component's own pixels, within its bbox only (cv2.mean is SIMD).
        own = (labels[y : y + h, x : x + w] == cid).view(np.uint8)
        mean_p = cv2.mean(prob32[y : y + h, x : x + w], mask=own)[0]
        mean_i = cv2.mean(intensity32[y : y + h, x : x + w], mask=own)[0]
        out.append(
            Region(
                kind=RegionKind.COMPONENT,
                label=f"component_{k}",
                bbox=(x, y, x + w, y + h),
                area_fraction=area / prob.size,
                coverage=1.0,
                mean_probability=float(mean_p),
                mean_intensity=float(mean_i),
                verdict=RegionVerdict.BLURRED,
            )
        )
    return out


def semantic_regions(
    prob: np.ndarray,
    intensity: np.ndarray,
    threshold: float,
    faces: Sequence[Box] = (),
    foreground: Foreground | Box | None = None,
    config: RegionConfig = RegionConfig(),
    *,
    evidence: Evidence = Evidence(),
    _blurred: np.ndarray | None = None,
) -> list[Region]:
    """A ``face`` region per face box (``face_0``, ... in the order given) and a
    ``foreground`` region (its mask's pixels when it is a :class:`Foreground`)."""
    _check_maps(prob, intensity, threshold)
    height, width = prob.shape
    blurred = prob >= threshold if _blurred is None else _blurred
    out: list[Region] = []
    for k, face in enumerate(faces):
        box = clip_box(face, width, height)
        if box_area(box) == 0:
            continue
        area, cov, mp, mi = _stats(prob, intensity, blurred, box, evidence=evidence)
        verdict = _verdict(cov, config.face_blur_limit)
        out.append(Region(RegionKind.FACE, f"face_{k}", box, area, cov, mp, mi, verdict, face_confidence(face)))
    if foreground is not None:
        mask = None
        if isinstance(foreground, Foreground):
            box = clip_box(foreground.box, width, height)
            if foreground.mask.shape == prob.shape:
                mask = foreground.mask
        else:
            box = clip_box(foreground, width, height)
        if box_area(box) > 0:
            area, cov, mp, mi = _stats(prob, intensity, blurred, box, mask, evidence)
            if area > 0:
                out.append(
                    Region(
                        RegionKind.FOREGROUND,
                        "foreground",
                        box,
                        area,
                        cov,
                        mp,
                        mi,
                        _verdict(cov, config.foreground_blur_limit),
                    )
                )
    return out


def grid_regions(
    prob: np.ndarray,
    intensity: np.ndarray,
    threshold: float,
    config: RegionConfig = RegionConfig(),
    *,
    evidence: Evidence = Evidence(),
    _blurred: np.ndarray | None = None,
) -> list[Region]:
    """``grid_rows`` x ``grid_cols`` cells (labels ``r{row}c{col}``, row-major); cell
    edges are the rounded even splits of the image, so the cells tile it exactly."""
    _check_maps(prob, intensity, threshold)
    height, width = prob.shape
    blurred = prob >= threshold if _blurred is None else _blurred
    ys = np.round(np.linspace(0, height, config.grid_rows + 1)).astype(int)
    xs = np.round(np.linspace(0, width, config.grid_cols + 1)).astype(int)
    out = []
    for r in range(config.grid_rows):
        for c in range(config.grid_cols):
            box = (int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))
            if box_area(box) == 0:
                continue
            area, cov, mp, mi = _stats(prob, intensity, blurred, box, evidence=evidence)
            out.append(
                Region(
                    RegionKind.GRID,
                    f"r{r}c{c}",
                    box,
                    area,
                    cov,
                    mp,
                    mi,
                    _verdict(cov, config.grid_blur_limit),
                )
            )
    return out


def frame_median(prob: np.ndarray, observable: np.ndarray | None = None, min_fraction: float = 0.0) -> float:
    """Median probability over the observable pixels (all pixels without a map).

    0.0 when fewer than ``min_fraction`` of the pixels are observable, as for every share:
    an image with nothing to see has no blur evidence.
    """
    p = np.asarray(prob, np.float32)
    if observable is None:
        return float(np.median(p)) if p.size else 0.0
    n_obs = int(np.count_nonzero(observable))
    if n_obs == 0 or n_obs < min_fraction * observable.size:
        return 0.0
    # The masked pixels are a fresh copy: the median may reorder it instead of copying again.
    return float(np.median(p[observable], overwrite_input=True))


# --- verdict --------------------------------------------------------------------------


def highest_frame_median(full: float, coarse_medians: Mapping[float, float] | None = None) -> tuple[float, float]:
    """(median, scale): the highest of the full-size frame median and those read on smaller
    copies (:func:`qc_worker.detector.scales.coarse_frame_medians`); ties go to full size."""
    medians = {1.0: full, **(coarse_medians or {})}
    scale = max(medians, key=lambda k: (medians[k], k))
    return medians[scale], scale


def worst_region(regions: Sequence[R], face_review_limit: float) -> R | None:
    """The most blurred face when some face is at least ``face_review_limit`` covered;
    else the foreground when it is blurred; else the largest blur component; else None.

    Works on :class:`Region` and on anything with the same attributes (the stored
    ``blur_regions`` rows, whose numbers may be NULL), so reports apply the same rule.
    """
    faces = [r for r in regions if r.kind == RegionKind.FACE and (r.coverage or 0.0) >= face_review_limit]
    if faces:
        return max(faces, key=lambda r: r.coverage or 0.0)
    for r in regions:
        if r.kind == RegionKind.FOREGROUND and r.verdict == RegionVerdict.BLURRED:
            return r
    components = [r for r in regions if r.kind == RegionKind.COMPONENT]
    return max(components, key=lambda r: r.area_fraction or 0.0) if components else None


def _sure(face: Region, config: RegionConfig) -> bool:
    """Whether a face region is certain enough to reject an image."""
    return face.confidence is None or face.confidence >= config.face_reject_confidence


def image_verdict(
    regions: Sequence[Region],
    blurred_fraction: float,
    config: RegionConfig = RegionConfig(),
    *,
    median: float = 0.0,
    frame_threshold: float | None = None,
    frame_scale: float = 1.0,
) -> tuple[ImageVerdict, float, tuple[str, ...]]:
    """(verdict, score, reasons) by the rule in the module doc; ``median`` is the frame
    median (read at ``frame_scale`` of full size), judged only when ``frame_threshold`` is given."""
    faces = [r for r in regions if r.kind == RegionKind.FACE]
    reject: list[str] = []
    review: list[str] = []
    face_ratio = 0.0
    for f in faces:
        sure = _sure(f, config)
        ratio = f.coverage / config.face_blur_limit
        face_ratio = max(face_ratio, ratio if sure else min(0.99, ratio))
        if f.coverage >= config.face_blur_limit and sure:
            reject.append(f"{f.label} blurred {f.coverage:.0%} >= {config.face_blur_limit:.0%}")
        elif f.coverage >= config.face_blur_limit:
            review.append(
                f"{f.label} blurred {f.coverage:.0%} >= {config.face_blur_limit:.0%}, but face confidence "
                f"{f.confidence:.2f} < {config.face_reject_confidence:.2f}"
            )
        elif f.coverage >= config.face_review_limit:
            review.append(f"{f.label} blurred {f.coverage:.0%} >= {config.face_review_limit:.0%}")
    subject_ratio, subject_rejected = face_ratio, False
    if not faces:
        for r in regions:
            if r.kind == RegionKind.FOREGROUND:
                subject_ratio = r.coverage / config.foreground_reject_limit
                subject_rejected = r.coverage >= config.foreground_reject_limit
                if subject_rejected:
                    reject.append(
                        f"no face; foreground blurred {r.coverage:.0%} >= {config.foreground_reject_limit:.0%}"
                    )
    if blurred_fraction >= config.reject_area_fraction:
        reject.append(f"image blurred {blurred_fraction:.0%} >= {config.reject_area_fraction:.0%}")
    elif blurred_fraction >= config.review_area_fraction:
        review.append(f"image blurred {blurred_fraction:.0%} >= {config.review_area_fraction:.0%}")
    for r in regions:
        if r.kind == RegionKind.FOREGROUND and subject_rejected:
            continue  # said above, as a reject
        if r.kind in (RegionKind.FOREGROUND, RegionKind.GRID) and r.verdict == RegionVerdict.BLURRED:
            review.append(f"{r.label} blurred {r.coverage:.0%} >= {_limit(r.kind, config):.0%}")
        elif (
            r.kind == RegionKind.COMPONENT
            and r.area_fraction >= config.review_component_fraction
            and r.mean_probability >= config.review_probability
        ):
            review.append(
                f"{r.label} ({r.area_fraction:.1%} of image) mean probability "
                f"{r.mean_probability:.2f} >= {config.review_probability:.2f}"
            )
    if frame_threshold is not None and median >= frame_threshold:
        at = "" if frame_scale == 1.0 else f" at {frame_scale:g}x size"
        review.append(f"whole frame: median probability {median:.2f}{at} >= {frame_threshold:.2f}")
    score = min(1.0, max(blurred_fraction / config.reject_area_fraction, subject_ratio))
    if reject:
        return ImageVerdict.REJECT, 1.0, tuple(reject + review)
    if review:
        return ImageVerdict.REVIEW, score, tuple(review)
    return ImageVerdict.PASS, score, ()


def analyse_regions(
    prob: np.ndarray,
    intensity: np.ndarray,
    threshold: float,
    *,
    faces: Sequence[Box] = (),
    foreground: Foreground | Box | None = None,
    config: RegionConfig = RegionConfig(),
    observable: np.ndarray | None = None,
    min_observable_fraction: float = 0.0,
    frame_threshold: float | None = None,
    coarse_medians: Mapping[float, float] | None = None,
) -> RegionReport:
    """Every region of one image (faces, foreground, components, grid cells, in that
    order), the image verdict, the worst region and the score.

    ``observable`` (bool HxW, optional) limits blur to pixels where it can be seen and
    takes every share over them (see the module doc). ``frame_threshold`` (the model
    version's, None: the rule is off) sends to review an image whose frame median reaches it.
    ``coarse_medians`` (scale -> the frame median of a smaller copy,
    :func:`qc_worker.detector.scales.coarse_frame_medians`) join the full-size one: the
    frame median is the highest of them.

    ``worst_region`` is the most blurred face when some face is at least
    ``face_review_limit`` covered; else the foreground when it is blurred; else the largest
    blur component; else None (grid cells are a summary, never the worst region).
    """
    _check_maps(prob, intensity, threshold)
    blurred = prob >= threshold
    evidence = Evidence(observable, min_observable_fraction)
    if observable is None:
        blurred_fraction = float(np.count_nonzero(blurred)) / blurred.size if blurred.size else 0.0
    else:
        if observable.shape != prob.shape:
            raise ValueError(f"observable shape {observable.shape} differs from prob {prob.shape}")
        blurred &= observable
        n_obs = int(np.count_nonzero(observable))
        enough = n_obs > 0 and n_obs >= min_observable_fraction * observable.size
        blurred_fraction = float(np.count_nonzero(blurred)) / n_obs if enough else 0.0
    regions = [
        *semantic_regions(
            prob,
            intensity,
            threshold,
            faces,
            foreground,
            config,
            evidence=evidence,
            _blurred=blurred,
        ),
        *blur_components(
            prob,
            intensity,
            threshold,
            config.min_component_fraction,
            config.max_components,
            _blurred=blurred,
        ),
        *grid_regions(prob, intensity, threshold, config, evidence=evidence, _blurred=blurred),
    ]
    median, scale = highest_frame_median(frame_median(prob, observable, min_observable_fraction), coarse_medians)
    verdict, score, reasons = image_verdict(
        regions, blurred_fraction, config, median=median, frame_threshold=frame_threshold, frame_scale=scale
    )
    worst = worst_region(regions, config.face_review_limit)
    return RegionReport(tuple(regions), verdict, worst, blurred_fraction, score, reasons, median)
