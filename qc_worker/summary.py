"""How a screened image reads outside the database: the words of ``qc screen``'s table and
the fields of its CSV and JSON.

One crop notation everywhere a person or a program reads a crop: ``x, y, w, h`` in image
pixels (left and top edge, width and height). The table writes it ``WxH at X,Y``; JSON and
CSV give the four numbers. (The database keeps the detector's corners ``x0, y0, x1, y1``,
documented for analysts in ``docs/sql.md``.)

Crops and regions arrive as the detector's :class:`~qc_worker.detector.roi.Roi` and
:class:`~qc_worker.detector.regions.Region` values; this module turns them into words and
fields at the edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qc_worker.vocabulary import RegionKind

if TYPE_CHECKING:
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi
    from qc_worker.values import Outcome

__all__ = ["crop_box", "crop_json", "crop_text", "csv_header", "csv_row", "worst_text"]


def crop_box(roi: Roi) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of a crop."""
    x0, y0, x1, y1 = (int(v) for v in roi.bbox)
    return x0, y0, x1 - x0, y1 - y0


def crop_json(roi: Roi) -> dict:
    """A crop as ``qc screen --format json`` gives it: the corners replaced by ``x, y, w, h``."""
    x, y, w, h = crop_box(roi)
    fields = {k: v for k, v in roi.to_dict().items() if k != "bbox"}
    return {"aspect": fields.pop("aspect"), "x": x, "y": y, "w": w, "h": h, **fields}


def crop_text(roi: Roi | None) -> str:
    """``240x135 at 160,14 safe``, or ``... unsafe: why`` (the crop's own reason)."""
    if not roi:
        return "-"
    x, y, w, h = crop_box(roi)
    where = f"{w}x{h} at {x},{y}"
    return f"{where} safe" if roi.safe else f"{where} unsafe: {roi.reason or 'no reason recorded'}"


def worst_text(region: Region | None) -> str:
    """``component_0 12.3% of image p=0.81`` (a blob of blur: its share of the image and
    mean blur probability) or ``face_0 32% blurred`` (a face, the foreground or a grid cell:
    the blurred share of its textured pixels)."""
    if not region:
        return "-"
    kind, label = _region_name(region)
    share, area, probability = _region_numbers(region)
    if kind == RegionKind.COMPONENT:
        return f"{label} {area:.1%} of image p={probability:.2f}"
    return f"{label} {share:.0%} blurred"


def _region_name(region: Region) -> tuple[str, str]:
    return str(region.kind), str(region.label)


def _region_numbers(region: Region) -> tuple[float, float, float]:
    """(blurred share of the region, its share of the image, its mean blur probability)."""
    return float(region.coverage), float(region.area_fraction), float(region.mean_probability)


def _aspect_key(aspect: str) -> str:
    return aspect.replace(":", "_")


def csv_header(aspects: Sequence[str]) -> list[str]:
    """The CSV columns: the image, then its worst region, then each aspect's crop."""
    head = ["file", "status", "verdict", "score", "reason"]
    head += ["worst_kind", "worst_label", "worst_share", "worst_area", "worst_probability"]
    for aspect in aspects:
        head += [f"crop_{_aspect_key(aspect)}_{f}" for f in ("x", "y", "w", "h", "safe", "reason")]
    return head


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def csv_row(outcome: Outcome, aspects: Sequence[str]) -> list[str]:
    """One image's CSV row (:func:`csv_header`): numbers as plain decimals (shares as
    fractions of 1, not percentages), ``true``/``false`` for safety, empty where a value
    does not exist (a failed image, an image without a blurred or face region)."""
    row = [outcome.uri, str(outcome.status), str(outcome.verdict or ""), _number(outcome.score), outcome.why or ""]
    if outcome.worst_region:
        kind, label = _region_name(outcome.worst_region)
        row += [kind, label, *(_number(v) for v in _region_numbers(outcome.worst_region))]
    else:
        row += [""] * 5
    for aspect in aspects:
        roi = outcome.best_crop(aspect)
        if roi is None:
            row += [""] * 6
            continue
        row += [str(v) for v in crop_box(roi)]
        row += ["true" if roi.safe else "false", roi.reason or ""]
    return row
