"""Offline mask sources: where on a sharp photo blur may be synthesised (paper 3.1).

The paper takes instance masks from SAM. Training must also run on machines without SAM
weights or a network, so the required sources here are classical and ship with OpenCV:
a GrabCut foreground matte seeded from spectral-residual saliency and a centre prior,
Haar-cascade faces, skin and hair heuristics inside the foreground, and random shapes as
the fallback. Learned segmenters (a TorchScript file, SAM) plug in when their weights are
given; nothing here ever downloads anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import (
    MaskSource,
    MaskSourceError,
    _check_image,
    _mask_iou,
    _seed_from_image,
)
from model_training.synth.masks.faces import FaceBox, FaceDetector
from model_training.synth.masks.matte import (
    ForegroundMatte,
    centre_prior,
    spectral_residual_saliency,
)
from model_training.synth.masks.segmenters import SamSource, SegmenterSource, TorchScriptSegmenter
from model_training.synth.masks.shapes import RandomShapes
from model_training.synth.masks.skin_hair import SkinHair

__all__ = [
    "SOURCE_NAMES",
    "FaceBox",
    "FaceDetector",
    "ForegroundMatte",
    "MaskSource",
    "MaskSourceError",
    "RandomShapes",
    "SamSource",
    "SegmenterSource",
    "SkinHair",
    "TorchScriptSegmenter",
    "build_mask_sources",
    "centre_prior",
    "extract_instances",
    "spectral_residual_saliency",
]

logger = logging.getLogger(__name__)

SOURCE_NAMES: tuple[str, ...] = ("foreground", "faces", "skin_hair", "random", "torchscript", "sam")


def build_mask_sources(
    names: Sequence[str],
    *,
    segmenter_weights: Path | None = None,
    sam_weights: Path | None = None,
) -> list[MaskSource]:
    """Sources by name, in the order given (earlier sources win when masks coincide).

    The foreground, faces and skin/hair sources share one matte and one face detector, so
    each image is matted and scanned for faces once.
    """
    matte = ForegroundMatte()
    faces = FaceDetector()
    sources: list[MaskSource] = []
    for name in names:
        if name == "foreground":
            sources.append(matte)
        elif name == "faces":
            sources.append(faces)
        elif name == "skin_hair":
            sources.append(SkinHair(matte, faces))
        elif name == "random":
            sources.append(RandomShapes())
        elif name == "torchscript":
            if segmenter_weights is None:
                raise MaskSourceError("mask source 'torchscript' needs segmenter_weights")
            sources.append(TorchScriptSegmenter(segmenter_weights))
        elif name == "sam":
            if sam_weights is None:
                raise MaskSourceError("mask source 'sam' needs sam_weights")
            sources.append(SamSource(sam_weights))
        else:
            raise MaskSourceError(f"unknown mask source {name!r}; valid names: {', '.join(SOURCE_NAMES)}")
    return sources


def extract_instances(
    image: np.ndarray,
    sources: Sequence[MaskSource],
    *,
    rng: np.random.Generator | None = None,
    min_area_fraction: float = 0.002,
    max_instances: int = 12,
) -> list[Instance]:
    """Instances from all sources, filtered and deduplicated, never empty for a real image.

    Tiny masks are dropped because blur on a few pixels teaches nothing; near-identical
    masks (IoU > 0.9) are kept once so no region is over-sampled. When no source finds
    anything, random shapes stand in so every training image still gets blurred somewhere.
    """
    _check_image(image)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return []
    rng = rng if rng is not None else _seed_from_image(image)
    min_area = max(1.0, min_area_fraction * height * width)
    kept: list[Instance] = []
    for source in sources:
        found = source(image, rng) if isinstance(source, RandomShapes) else source(image)
        for instance in found:
            if instance.mask.shape != (height, width):
                raise MaskSourceError(
                    f"source {source.name!r} returned a {instance.mask.shape} mask for a {(height, width)} image"
                )
            if instance.area >= min_area and not any(_mask_iou(instance.mask, other.mask) > 0.9 for other in kept):
                kept.append(instance)
        if len(kept) >= max_instances:
            break
    if kept:
        return kept[:max_instances]
    logger.debug("no mask source found an instance; falling back to random shapes")
    return [shape for shape in RandomShapes()(image, rng) if shape.area > 0][:max_instances]
