"""The picture a person checks: heat map of blur, region boxes, crop-safe boxes.

Blur probability is tinted over a greyed copy of the image (colour stays where the blur
is, so it reads at a glance); blurred regions are boxed in red, sharp faces in green, and
each aspect's best crop is outlined in its own colour with its aspect ratio written on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cv2
import numpy as np

_ROI_COLOURS = [(255, 200, 0), (0, 200, 255), (255, 0, 200), (120, 255, 120), (200, 200, 200)]


def render_overlay(
    rgb: np.ndarray,
    probability: np.ndarray,
    regions: Iterable[Mapping] = (),
    rois: Iterable[Mapping] = (),
) -> np.ndarray:
    """An RGB uint8 image the size of ``rgb``. ``regions``/``rois`` are their ``to_dict()`` forms."""
    gray = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    heat = cv2.applyColorMap(np.clip(probability * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = np.clip(probability, 0, 1)[..., None] * 0.6
    out = (gray * (1 - alpha) + heat * alpha).astype(np.uint8)
    thick = max(1, round(min(rgb.shape[:2]) / 300))
    for r in regions:
        if r.get("kind") == "grid":
            continue
        blurred = r.get("verdict") == "blurred"
        if r.get("kind") == "face" or blurred:
            colour = (255, 40, 40) if blurred else (40, 220, 40)
            x0, y0, x1, y1 = (int(v) for v in r["bbox"])
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thick)
    for i, roi in enumerate(rois):
        colour = _ROI_COLOURS[i % len(_ROI_COLOURS)]
        x0, y0, x1, y1 = (int(v) for v in roi["bbox"])
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thick)
        label = f"{roi['aspect']}{'' if roi.get('safe', True) else ' unsafe'}"
        cv2.putText(
            out,
            label,
            (x0 + 3, y0 + 14 * thick),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45 * thick,
            colour,
            thick,
        )
    return out


def encode_overlay(rgb: np.ndarray) -> bytes:
    """JPEG bytes (quality 90) of an overlay. A heat map over a photo compresses like a
    photo: JPEG is about 5x smaller and 4x faster to encode than PNG here, and an overlay
    is a picture for a person, never data (the numbers are in the database)."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("could not encode the overlay")
    return buf.tobytes()
