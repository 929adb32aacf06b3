"""The picture a person checks: heat map of blur, region boxes, crop-safe boxes.

Blur probability is tinted over a greyed copy of the image (colour stays where the blur
is, so it reads at a glance). :func:`draw_boxes` is the one box renderer: the overlay a
worker stores and the boxes ``qc report`` draws on a thumbnail when no overlay can be read
both come from it. Blurred regions are boxed in red, sharp faces in green (faces labelled
with their blurred share), and each aspect's crop is outlined in its own colour, labelled
with its aspect ratio and whether it is safe. Labels never overlap one another or the
small legend that says what each colour means (:func:`layout`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from qc_worker.detector.boxes import Box
from qc_worker.vocabulary import RegionKind, RegionVerdict

if TYPE_CHECKING:
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi

__all__ = [
    "BLURRED",
    "ROI_COLOURS",
    "SHARP",
    "Label",
    "Legend",
    "aspect_colours",
    "draw_boxes",
    "encode_overlay",
    "layout",
    "render_overlay",
]

BLURRED = (230, 30, 30)
SHARP = (30, 190, 60)
#: Crop colours, one per aspect in the order the aspects first appear: amber, azure,
#: magenta, white, pink. Each is far (CIE76 distance over 40) from the red of blur, the
#: green of sharp faces and the others, so no crop reads as a face or as another crop.
ROI_COLOURS = [(255, 190, 0), (0, 150, 255), (230, 0, 230), (255, 255, 255), (255, 130, 200)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT = (255, 255, 255)

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Label:
    """Text on a black band; ``box`` is the band, ``(x0, y0, x1, y1)``, exclusive ends."""

    text: str
    colour: Colour
    box: Box


@dataclass(frozen=True)
class Legend:
    """What each colour means, as ``(colour, words)`` lines on one black band at ``box``."""

    lines: tuple[tuple[Colour, str], ...]
    box: Box


def aspect_colours(rois: Iterable[Roi]) -> dict[str, Colour]:
    """One colour per aspect ratio, in the order the aspects first appear."""
    aspects = dict.fromkeys(str(r.aspect) for r in rois)
    return {a: ROI_COLOURS[i % len(ROI_COLOURS)] for i, a in enumerate(aspects)}


def _text_size(text: str, scale: float) -> tuple[int, int, int]:
    """(band width, band height, baseline) of ``text``: its size and a 2-pixel margin."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, _thickness(scale))
    return w + 4, h + base + 4, base


def _thickness(scale: float) -> int:
    return max(1, round(scale * 2))


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place(
    size: tuple[int, int], anchors: Sequence[tuple[int, int]], taken: list[Box], shape: tuple[int, ...]
) -> Box | None:
    """The first free place for a band of ``size``: each anchor (top-left corner, moved
    inside the image), then every place on a grid of half a band over the image; None when
    the image has no free place left. A placed band is added to ``taken``."""
    w, h = size
    height, width = shape[:2]
    if w > width or h > height:
        return None
    scan = ((x, y) for y in range(0, height - h + 1, max(h // 2, 1)) for x in range(0, width - w + 1, max(w // 2, 1)))
    for x, y in itertools.chain(anchors, scan):
        x, y = min(max(int(x), 0), width - w), min(max(int(y), 0), height - h)
        box = (x, y, x + w, y + h)
        if not any(_overlaps(box, t) for t in taken):
            taken.append(box)
            return box
    return None


def _drawn_regions(regions: Iterable[Region]) -> list[tuple[Region, bool]]:
    """(region, blurred) of the regions drawn: blurred ones and sharp faces, never grid cells."""
    drawn = []
    for r in regions:
        kind, blurred = r.kind, r.verdict == RegionVerdict.BLURRED
        if kind != RegionKind.GRID and (blurred or kind == RegionKind.FACE):
            drawn.append((r, blurred))
    return drawn


def layout(
    shape: tuple[int, ...],
    regions: Iterable[Region] = (),
    rois: Iterable[Roi] = (),
    *,
    font_scale: float = 0.4,
    thickness: int = 2,
) -> tuple[Legend | None, list[Label]]:
    """Where the legend and the labels go on an image of ``shape``: no two overlap.

    The legend takes the bottom-left corner (else another corner). Each face is labelled
    above its box (else inside, else below); each crop inside one of its corners (bottom
    left first), else just outside it. A label whose places are all taken goes to the first
    free place on the image, and is left out only when there is none: its box's colour and
    the legend still say what it is.
    """
    rois = list(rois)
    return _layout(shape, _drawn_regions(regions), rois, aspect_colours(rois), font_scale, thickness)


def _layout(
    shape: tuple[int, ...],
    regions: list[tuple[Region, bool]],
    rois: list[Roi],
    colours: dict[str, Colour],
    font_scale: float,
    thickness: int,
) -> tuple[Legend | None, list[Label]]:
    """:func:`layout` for the regions :func:`_drawn_regions` picked and the crops'
    colours already chosen, which :func:`draw_boxes` needs too."""
    lines: list[tuple[Colour, str]] = []
    if any(blurred for _, blurred in regions):
        lines.append((BLURRED, "blurred"))
    if any(not blurred for _, blurred in regions):
        lines.append((SHARP, "sharp face"))
    lines += [(c, f"{a} crop") for a, c in colours.items()]
    taken: list[Box] = []
    legend = None
    if lines:
        line_h = max(_text_size(t, font_scale)[1] for _, t in lines)
        size = (line_h + max(_text_size(t, font_scale)[0] for _, t in lines), line_h * len(lines))
        height, width = shape[:2]
        corners = [(0, height), (width, height), (0, 0), (width, 0)]
        box = _place(size, corners, taken, shape)
        legend = Legend(tuple(lines), box) if box else None
    labels = []
    for r, blurred in regions:
        if r.kind != RegionKind.FACE:
            continue
        coverage = r.coverage
        text = f"{r.label or 'face'}" + (f" {coverage:.0%}" if coverage is not None else "")
        w, h, _ = _text_size(text, font_scale)
        x0, y0, _, y1 = (int(round(v)) for v in r.bbox)
        box = _place((w, h), [(x0, y0 - h), (x0, y0), (x0, y1)], taken, shape)
        if box:
            labels.append(Label(text, BLURRED if blurred else SHARP, box))
    for roi in rois:
        text = f"{roi.aspect} {'safe' if roi.safe else 'unsafe'}"
        w, h, _ = _text_size(text, font_scale)
        x0, y0, x1, y1 = (int(round(v)) for v in roi.bbox)
        t = thickness
        inside = [(x0 + t, y1 - t - h), (x0 + t, y0 + t), (x1 - t - w, y1 - t - h), (x1 - t - w, y0 + t)]
        box = _place((w, h), [*inside, (x0, y1), (x0, y0 - h)], taken, shape)
        if box:
            labels.append(Label(text, colours[str(roi.aspect)], box))
    return legend, labels


def _band(out: np.ndarray, box: Box) -> None:
    cv2.rectangle(out, (box[0], box[1]), (box[2] - 1, box[3] - 1), (0, 0, 0), -1)


def _write(out: np.ndarray, text: str, x: int, y_bottom: int, colour: Colour, scale: float) -> None:
    cv2.putText(out, text, (x, y_bottom), _FONT, scale, colour, _thickness(scale), cv2.LINE_AA)


def draw_boxes(
    out: np.ndarray,
    regions: Iterable[Region] = (),
    rois: Iterable[Roi] = (),
    *,
    thickness: int = 2,
    font_scale: float = 0.4,
) -> np.ndarray:
    """Draw regions, crops, their labels and a legend in place on the RGB uint8 ``out`` and return it.

    ``regions`` and ``rois`` are the detector's values (``qc report`` makes them from stored
    rows), with boxes in ``out``'s pixels. Grid cells are never drawn (they are a summary); a sharp region is
    drawn only when it is a face. Labels and legend go where :func:`layout` puts them.
    """
    drawn, rois = _drawn_regions(regions), list(rois)
    for r, blurred in drawn:
        x0, y0, x1, y1 = (int(round(v)) for v in r.bbox)
        cv2.rectangle(out, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), BLURRED if blurred else SHARP, thickness)
    colours = aspect_colours(rois)
    for roi in rois:
        x0, y0, x1, y1 = (int(round(v)) for v in roi.bbox)
        cv2.rectangle(out, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), colours[str(roi.aspect)], thickness)
    legend, labels = _layout(out.shape, drawn, rois, colours, font_scale, thickness)
    for label in labels:
        _band(out, label.box)
        _, h, base = _text_size(label.text, font_scale)
        _write(out, label.text, label.box[0] + 2, label.box[1] + h - base - 2, label.colour, font_scale)
    if legend is not None:
        _band(out, legend.box)
        line_h = (legend.box[3] - legend.box[1]) // len(legend.lines)
        for i, (colour, text) in enumerate(legend.lines):
            x, y = legend.box[0], legend.box[1] + i * line_h
            cv2.rectangle(out, (x + 3, y + 3), (x + line_h - 4, y + line_h - 4), colour, -1)
            _, h, base = _text_size(text, font_scale)
            _write(out, text, x + line_h, y + h - base - 2, _TEXT, font_scale)
    return out


def render_overlay(
    rgb: np.ndarray,
    probability: np.ndarray,
    regions: Iterable[Region] = (),
    rois: Iterable[Roi] = (),
) -> np.ndarray:
    """An RGB uint8 image the size of ``rgb``, with ``regions`` and ``rois`` drawn on the heat map."""
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
