"""The whole frame judged at more than one size: the frame rule's medians on smaller copies.

Frames of real video (HIDE's GoPro footage, Fastec's high-speed camera) carry sensor noise
and compression. At full size the network reads that grain as fine texture, that is as
sharpness, and lets a 10-pixel pan pass; on a copy at half size the grain averages out
while the smear is still 5 pixels long, and the network sees it. A sharp photo stays sharp
at every size. So the whole-frame rule (:mod:`qc_worker.detector.regions`) takes the
highest of the median probabilities read at each of the model version's ``frame_scales``,
each over the pixels observable *at that size*: with the shipped weights unchanged, that
raised realdev's blurred-only frames that do not pass from 10 to 13 of 15 and sent no
sharp photo to review (``qc-train calibrate --frame-scales 1,0.5``, see the model card).

Only the frame rule looks at the smaller copies. Averaging their maps into the screening
map was tried too: it caught one blurred frame fewer, cut blur-class IoU on the synthetic
test set from 0.58 to 0.53 at the calibrated threshold (a small blurred object vanishes at
half size) and sent the bundled cat photo to review over its defocused background.

The scales belong to a model version, like the thresholds calibrated with them: they travel
in the checkpoint (``thresholds["frame_scales"]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from qc_worker.config import ObservableConfig
from qc_worker.detector.observable import observable_map
from qc_worker.detector.regions import frame_median

__all__ = ["check_frame_scales", "coarse_frame_medians", "downscale", "parse_frame_scales"]


def check_frame_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """``scales`` as a tuple, or ValueError: 1 (the screening map itself) among them, each
    in (0, 1], no repeats.

    Never above 1: upscaling softens an image and would look like blur.
    """
    out = tuple(float(s) for s in scales)
    bad = [s for s in out if not 0.0 < s <= 1.0]
    if bad:
        raise ValueError(f"frame scales must lie in (0, 1], got {bad}")
    if 1.0 not in out:
        raise ValueError(f"frame scales {list(out)} must include 1 (the full-size map)")
    if len(set(out)) != len(out):
        raise ValueError(f"repeated frame scale in {list(out)}")
    return out


def parse_frame_scales(text: str) -> tuple[float, ...]:
    """``"1,0.5"`` -> ``(1.0, 0.5)``, checked by :func:`check_frame_scales`."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"frame scales {text!r}: give numbers separated by commas, e.g. 1,0.5") from None
    return check_frame_scales(values)


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (area interpolation, at least one pixel a side)."""
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def coarse_frame_medians(
    rgb: np.ndarray, coarse: Mapping[float, np.ndarray], config: ObservableConfig = ObservableConfig()
) -> dict[float, float]:
    """Scale -> median probability over the observable pixels of ``rgb`` downscaled to it.

    ``coarse`` maps each scale below 1 to the detector's probability map of that copy (at
    the copy's size). Observability is read on the copy too: at half size a fine texture
    that a pan smeared still counts, where at full size its smear made it look flat.
    """
    out = {}
    for scale, prob in coarse.items():
        small = downscale(rgb, scale)
        if small.shape[:2] != prob.shape:
            raise ValueError(f"the {scale:g}x map is {prob.shape}, the {scale:g}x copy {small.shape[:2]}")
        out[scale] = frame_median(prob, observable_map(small, config), config.min_observable_fraction)
    return out
