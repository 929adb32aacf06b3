"""The synthesis recipe: every constant of paper-notes sections 1-3 as a named default.

This is not runtime configuration of the worker (that is :mod:`qc_worker.config`, read
from ``QC_`` variables); it is the recipe a dataset or a checkpoint was made with, so it
is saved beside what it produced and loaded back from a JSON file with ``--config``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BlurName = Literal["straight", "curved", "zoom_rotation", "random_walk", "edge_ring", "rolling"]

#: Paper 3.5: (1) straight + random walk; (2) + curved, rolling, edge ring;
#: (3) + zoom with rotation and mixed-instance images.
CURRICULUM: dict[int, tuple[BlurName, ...]] = {
    1: ("straight", "random_walk"),
    2: ("straight", "random_walk", "curved", "rolling", "edge_ring"),
    3: ("straight", "random_walk", "curved", "rolling", "edge_ring", "zoom_rotation"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExtentConfig(_Strict):
    """How far blur smears, in pixels at the working resolution.

    "Subtle" is the point (paper 3.2): most draws are mild, a few pixels, and a minority
    strong. Extents are log-uniform inside each range so 2 px and 4 px are as common as
    4 px and 8 px.
    """

    mild_px: tuple[float, float] = (1.5, 6.0)
    strong_px: tuple[float, float] = (6.0, 28.0)
    strong_prob: float = Field(0.3, ge=0, le=1)
    #: Extent that maps to intensity 1.0 in the continuous target.
    max_px: float = Field(32.0, gt=0)


class CompositeConfig(_Strict):
    """Alpha-aware compositing and the ground truth it yields."""

    #: Feather sigma at a partial-coverage or edge-ring cut: base + per_extent * extent.
    feather_base_px: float = Field(1.0, ge=0)
    feather_per_extent: float = Field(0.5, ge=0)
    #: A blur is "visible" when at least this fraction of its labelled pixels changed by
    #: at least ``visible_delta`` 8-bit levels; otherwise the instance is relabelled sharp.
    visible_delta: int = Field(3, ge=1)
    min_visible_fraction: float = Field(0.02, ge=0, le=1)
    min_visible_pixels: int = Field(16, ge=1)
    #: Integrate exposure in linear light (physically right) rather than on sRGB values.
    linear_light: bool = True


class CoverageConfig(_Strict):
    """Per-instance coverage modes (paper 3.2): sharp, full mask, partial mask."""

    sharp: float = Field(0.15, ge=0)
    full: float = Field(0.6, ge=0)
    partial: float = Field(0.25, ge=0)
    #: Fraction of the instance's bounding box a partial sub-region spans.
    partial_size: tuple[float, float] = (0.3, 0.7)


class NegativeConfig(_Strict):
    """Hard negatives: softness that is *not* motion blur, labelled with an empty mask."""

    #: Probability that a sample is a hard negative (no motion blur at all).
    prob: float = Field(0.2, ge=0, le=1)
    #: Probability that a motion-blurred sample also gets a degradation (JPEG, noise...),
    #: so the network cannot read "compressed" as "sharp".
    on_positive_prob: float = Field(0.3, ge=0, le=1)
    defocus_sigma: tuple[float, float] = (0.8, 3.0)
    jpeg_quality: tuple[int, int] = (15, 70)
    noise_sigma: tuple[float, float] = (0.01, 0.05)
    rescale_factor: tuple[float, float] = (0.3, 0.7)


class SamplingConfig(_Strict):
    """Mask-centric / image-centric / hybrid sampling and resolution-aware augmentation."""

    #: Probability of a mask-centric sample: 0 = image-centric only, 1 = mask-centric only.
    mask_centric_prob: float = Field(0.5, ge=0, le=1)
    #: Image-centric samples with no blurred instance at all (besides hard negatives).
    no_blur_prob: float = Field(0.1, ge=0, le=1)
    max_blurred_instances: int = Field(3, ge=1)
    #: Mask-centric crop side as a multiple of the instance's bounding-box side.
    crop_scale: tuple[float, float] = (1.3, 4.0)
    crop_aspect: tuple[float, float] = (0.75, 1.333)
    #: Working short side (px) the blur is synthesised at, log-uniform.
    short_side: tuple[int, int] = (256, 1024)
    #: Never enlarge a source by more than this before blurring (enlarging softens it).
    max_upscale: float = Field(1.25, ge=1)
    #: Down-scaling after the blur as well as before (thumbnails are made that way).
    post_downscale_prob: float = Field(0.3, ge=0, le=1)
    post_downscale: tuple[float, float] = (0.5, 0.9)
    #: Side of the square crop a training sample is delivered at.
    out_size: int = Field(384, ge=32)


class SynthConfig(_Strict):
    extent: ExtentConfig = ExtentConfig()
    composite: CompositeConfig = CompositeConfig()
    coverage: CoverageConfig = CoverageConfig()
    negatives: NegativeConfig = NegativeConfig()
    sampling: SamplingConfig = SamplingConfig()
    #: Curriculum stage 1-3; its blur types are ``CURRICULUM[stage]`` unless overridden.
    stage: int = Field(3, ge=1, le=3)
    blur_types: tuple[BlurName, ...] | None = None
    #: Relative frequency of each allowed blur type.
    blur_weights: dict[BlurName, float] = {
        "straight": 1.0,
        "curved": 1.0,
        "zoom_rotation": 0.6,
        "random_walk": 1.0,
        "edge_ring": 0.6,
        "rolling": 0.6,
    }
    #: Train/validation split of *source images* (never a source in both).
    val_fraction: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "SynthConfig":
        c = self.coverage
        if c.sharp + c.full + c.partial <= 0:
            raise ValueError("coverage probabilities must not all be zero")
        if not self.allowed_blur_types():
            raise ValueError("no blur type is allowed")
        return self

    def allowed_blur_types(self) -> tuple[str, ...]:
        return tuple(self.blur_types or CURRICULUM[self.stage])

    @property
    def mixed_instances(self) -> bool:
        """Paper 3.5: different blur types within one image only in the advanced stage."""
        return self.stage >= 3

    @classmethod
    def load(cls, path: Path | None) -> "SynthConfig":
        if path is None:
            return cls()
        try:
            return cls.model_validate(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read synthesis config {path}: {exc}") from exc
