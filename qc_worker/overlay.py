"""The picture a person checks: heat map of blur, region boxes, crop-safe boxes.

Blur probability is tinted over a greyed copy of the image (colour stays where the blur
is, so it reads at a glance). :func:`draw_boxes` is the one box renderer: the overlay a
worker stores and the boxes ``qc report`` draws on a thumbnail when no overlay can be read
both come from it. Blurred regions are boxed in red, sharp faces in green (faces labelled
with their blurred share), and each aspect's crop is outlined in its own colour, labelled
with its aspect ratio and whether it is safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from qc_worker.vocabulary import RegionKind, RegionVerdict

if TYPE_CHECKING:
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi

__all__ = ["BLURRED", "SHARP", "aspect_colours", "draw_boxes", "encode_overlay", "render_overlay"]

BLURRED = (230, 30, 30)
SHARP = (30, 190, 60)
_ROI_COLOURS = [(255, 200, 0), (0, 190, 255), (255, 0, 200), (140, 90, 255), (255, 255, 255)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def aspect_colours(rois: Iterable[Roi]) -> dict[str, tuple[int, int, int]]:
    """One colour per aspect ratio, in the order the aspects first appear."""
    aspects = dict.fromkeys(str(r.aspect) for r in rois)
    return {a: _ROI_COLOURS[i % len(_ROI_COLOURS)] for i, a in enumerate(aspects)}


def _label(out: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    """Text on a black band whose top-left corner is (x, y), kept inside the image."""
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    x = int(min(max(x, 0), max(out.shape[1] - w - 4, 0)))
    y = int(min(max(y, 0), max(out.shape[0] - h - base - 4, 0)))
    cv2.rectangle(out, (x, y), (x + w + 4, y + h + base + 4), (0, 0, 0), -1)
    cv2.putText(out, text, (x + 2, y + h + 2), _FONT, scale, colour, thick, cv2.LINE_AA)


def draw_boxes(
    out: np.ndarray,
    regions: Iterable[Region] = (),
    rois: Iterable[Roi] = (),
    *,
    thickness: int = 2,
    font_scale: float = 0.4,
) -> np.ndarray:
    """Draw regions and crops in place on the RGB uint8 ``out`` and return it.

    ``regions`` and ``rois`` are the detector's values (``qc report`` makes them from stored
    rows), with boxes in ``out``'s pixels. Grid cells are never drawn (they are a summary); a sharp region is
    drawn only when it is a face.
    """
    rois = list(rois)
    for r in regions:
        kind, blurred = r.kind, r.verdict == RegionVerdict.BLURRED
        if kind == RegionKind.GRID or not (blurred or kind == RegionKind.FACE):
            continue
        colour = BLURRED if blurred else SHARP
        x0, y0, x1, y1 = (int(round(v)) for v in r.bbox)
        cv2.rectangle(out, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), colour, thickness)
        if kind == RegionKind.FACE:
            coverage = r.coverage
            text = f"{r.label or 'face'}" + (f" {coverage:.0%}" if coverage is not None else "")
            _label(out, text, x0, y0, colour, font_scale)
    colours = aspect_colours(rois)
    for roi in rois:
        colour = colours[str(roi.aspect)]
        x0, y0, x1, y1 = (int(round(v)) for v in roi.bbox)
        cv2.rectangle(out, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), colour, thickness)
        text = f"{roi.aspect} {'safe' if roi.safe else 'unsafe'}"
        _label(out, text, x0 + thickness, y1 - thickness - round(24 * font_scale), colour, font_scale)
    return out


def render_overlay(
    rgb: np.ndarray,
    probability: np.ndarray,
    regions: Iterable[Region] = (),
    rois: Iterable[Roi] = (),
) -> np.ndarray:
    """An RGB uint8 image the size of ``rgb``, with the detector's regions and crops drawn."""
    gray = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    heat = cv2.applyColorMap(np.clip(probability * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = np.clip(probability, 0, 1)[..., None] * 0.6
    out = (gray * (1 - alpha) + heat * alpha).astype(np.uint8)
    side = min(rgb.shape[:2])
    return draw_boxes(out, regions, rois, thickness=max(1, round(side / 300)), font_scale=max(0.4, side / 1500))


def encode_overlay(rgb: np.ndarray) -> bytes:
    """JPEG bytes (quality 90) of an overlay. A heat map over a photo compresses like a
    photo: JPEG is about 5x smaller and 4x faster to encode than PNG here, and an overlay
    is a picture for a person, never data (the numbers are in the database)."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("could not encode the overlay")
    return buf.tobytes()
