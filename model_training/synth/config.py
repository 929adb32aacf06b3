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

from qc_worker.config import ObservableConfig

BlurName = Literal["straight", "curved", "zoom_rotation", "random_walk", "edge_ring", "rolling"]

#: Paper 3.5: (1) straight + random walk; (2) + curved, rolling, edge ring;
#: (3) + zoom with rotation and mixed-instance images.
CURRICULUM: dict[int, tuple[BlurName, ...]] = {
    1: ("straight", "random_walk"),
    2: ("straight", "random_walk", "curved", "rolling", "edge_ring"),
    3: ("straight", "random_walk", "curved", "rolling", "edge_ring", "zoom_rotation"),
}

CameraKind = Literal["shake", "sweep", "pan", "subject_camera", "frame_average"]

#: Whole-frame motion follows the same easy-to-hard order: a shake or a sweep is one
#: convolution of the whole frame; a pan or a moving subject adds a sharp-against-blurred
#: boundary; frame averaging adds parallax (layers smeared by different amounts) and
#: discrete ghosts.
CAMERA_CURRICULUM: dict[int, tuple[CameraKind, ...]] = {
    1: ("shake", "sweep"),
    2: ("shake", "sweep", "pan", "subject_camera"),
    3: ("shake", "sweep", "pan", "subject_camera", "frame_average"),
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


class LookConfig(_Strict):
    """The scene's look before the blur (:mod:`model_training.synth.look`), for any sample."""

    #: Probability that a sample's sharp working image gets a look at all.
    prob: float = Field(0.25, ge=0, le=1)
    #: Share of the scene's light replaced by a uniform veil (haze, glare, a dirty lens).
    haze: tuple[float, float] = (0.0, 0.6)
    #: The veil's level, as a fraction of white in linear light.
    airlight: tuple[float, float] = (0.3, 1.0)
    #: Exposure gain in linear light, log-uniform: under- to over-exposed.
    exposure: tuple[float, float] = (0.35, 1.6)
    #: Per-channel gains are drawn in ``1 ± cast`` (a white balance left uncorrected).
    cast: float = Field(0.15, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> LookConfig:
        for name, lo_min, hi_max in (("haze", 0.0, 1.0), ("airlight", 0.0, 1.0), ("exposure", 1e-3, 10.0)):
            lo, hi = getattr(self, name)
            if not lo_min <= lo <= hi <= hi_max:
                raise ValueError(f"look.{name} must be an increasing range within [{lo_min}, {hi_max}]")
        return self


class NegativeConfig(_Strict):
    """Hard negatives: softness that is *not* motion blur, labelled with an empty mask."""

    #: Probability that a sample is a hard negative (no motion blur at all). Sharp photos
    #: flagged as blurred were the first detector's worst failure, so a third of samples.
    prob: float = Field(0.3, ge=0, le=1)
    #: Probability that a motion-blurred sample also gets a degradation (JPEG, noise...),
    #: so the network cannot read "compressed" as "sharp".
    on_positive_prob: float = Field(0.3, ge=0, le=1)
    #: The degradations a motion-blurred sample may get: artefacts only. Softening ones
    #: (defocus, rescale, upscale, soft light) would wash out a mild blur the label keeps.
    on_positive: tuple[str, ...] = ("jpeg", "noise", "film_grain", "sharpen_halo")
    #: Probability that a hard negative with a subject matte gets portrait-mode bokeh
    #: (a defocused background behind the sharp subject) before its other degradations.
    bokeh_prob: float = Field(0.35, ge=0, le=1)
    defocus_sigma: tuple[float, float] = (0.8, 3.0)
    jpeg_quality: tuple[int, int] = (15, 70)
    #: Share of JPEG draws that are re-encoded thumbnails at ``heavy_jpeg_quality``: blocky
    #: 8x8 edges and ringing are sharp artefacts, and a separate share keeps them from
    #: swamping (or being lost in) the ordinary ``jpeg_quality`` range.
    heavy_jpeg_prob: float = Field(0.25, ge=0, le=1)
    heavy_jpeg_quality: tuple[int, int] = (8, 15)
    noise_sigma: tuple[float, float] = (0.01, 0.05)
    rescale_factor: tuple[float, float] = (0.3, 0.7)
    #: Film grain: amplitude (fraction of full scale, strongest in mid-tones) and the sigma
    #: (px) the noise is blurred by, so grain has a size like silver grains, unlike
    #: per-pixel sensor noise; a share of it is monochrome (black-and-white film).
    grain_amplitude: tuple[float, float] = (0.01, 0.05)
    grain_size_px: tuple[float, float] = (0.5, 1.2)
    grain_mono_prob: float = Field(0.5, ge=0, le=1)
    #: Over-sharpened camera JPEGs: unsharp-mask amount and radius (px) after sensor noise
    #: of ``sharpen_noise_sigma``; the halos are extra edges, the opposite of blur.
    sharpen_amount: tuple[float, float] = (0.5, 2.0)
    sharpen_radius_px: tuple[float, float] = (0.8, 3.0)
    sharpen_noise_sigma: tuple[float, float] = (0.0, 0.02)
    #: Soft studio light: contrast kept (1 = unchanged; lifted blacks), weight of the bloom
    #: added from the bright parts, the bloom sigma as a fraction of the short side, and
    #: the strength of a smooth illumination gradient. Lower contrast and glow look soft
    #: but keep every edge where it was.
    soft_contrast: tuple[float, float] = (0.7, 0.95)
    bloom_weight: tuple[float, float] = (0.1, 0.35)
    bloom_sigma_frac: tuple[float, float] = (0.02, 0.08)
    light_gradient: tuple[float, float] = (0.1, 0.4)
    #: Upscaled small masters: downscale factor, and the share upscaled with nearest
    #: neighbour (pixel art, blocky but sharp) rather than cubic or Lanczos.
    upscale_factor: tuple[float, float] = (0.2, 0.5)
    upscale_nearest_prob: float = Field(0.3, ge=0, le=1)
    #: Portrait-mode bokeh behind a sharp subject (``degrade.portrait_bokeh``): disk
    #: (aperture) radius in px at the working resolution, the share that grows with
    #: distance from the subject (depth), and the feather sigma (px) of the matte edge.
    bokeh_radius_px: tuple[float, float] = (2.0, 12.0)
    bokeh_depth_prob: float = Field(0.5, ge=0, le=1)
    bokeh_feather_px: tuple[float, float] = (0.7, 2.5)


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
    #: Share of samples delivered in grey: old masters and stills are often monochrome,
    #: and colour must not become a cue for sharpness.
    grayscale_prob: float = Field(0.08, ge=0, le=1)


GraphicKind = Literal["text", "shape", "logo", "drawn"]
BackgroundKind = Literal["flat", "linear", "radial", "noise"]


class GraphicsConfig(_Strict):
    """Generated graphic art (:mod:`model_training.synth.graphics`): titles, logos, shapes.

    Artwork is often not a photograph at all: flat colour, vector edges and text that are
    sharper than any photo, and smooth gradients that have no edges to judge. Without
    them the detector would call every gradient blurred and never see a blurred title.
    """

    #: Probability that a sample's source is a generated graphic instead of a photo.
    prob: float = Field(0.15, ge=0, le=1)
    #: Probability that a photo sample gets a title (and maybe a logo) drawn over it, as
    #: on box art, with the drawn elements as extra instances.
    overlay_prob: float = Field(0.15, ge=0, le=1)
    #: Probability that an overlay also has a small logo in a corner besides the title.
    overlay_logo_prob: float = Field(0.4, ge=0, le=1)
    #: Number of drawn elements on a generated graphic (inclusive).
    elements: tuple[int, int] = (1, 6)
    #: Relative frequency of each element kind.
    kind_weights: dict[GraphicKind, float] = {"text": 1.0, "shape": 1.0, "logo": 0.6, "drawn": 0.6}
    #: Relative frequency of each background; "noise" is a soft cloud texture.
    background_weights: dict[BackgroundKind, float] = {
        "flat": 1.0,
        "linear": 1.0,
        "radial": 0.7,
        "noise": 0.7,
    }
    #: Cap height of text as a fraction of the image height, so it scales from 128 to 1024 px.
    text_height: tuple[float, float] = (0.05, 0.25)
    #: Characters in a random text string (inclusive).
    text_length: tuple[int, int] = (1, 12)
    #: Size of shapes, logos and drawn blobs as a fraction of the image's short side.
    shape_size: tuple[float, float] = (0.1, 0.5)
    #: Probability of an outline around text or a shape, and of a drop shadow under text
    #: (both common on box-art titles and sharp, unlike a motion streak).
    outline_prob: float = Field(0.5, ge=0, le=1)
    shadow_prob: float = Field(0.3, ge=0, le=1)
    #: Least luminance difference (0-1) between an element and what it is drawn on, so
    #: that a later blur of it is visible rather than relabelled sharp.
    min_contrast: float = Field(0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> GraphicsConfig:
        for name in ("elements", "text_height", "text_length", "shape_size"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"graphics.{name} must be an increasing positive range")
        if sum(self.kind_weights.values()) <= 0 or sum(self.background_weights.values()) <= 0:
            raise ValueError("graphics weights must not all be zero")
        return self


class CameraConfig(_Strict):
    """Whole-frame motion (:mod:`model_training.synth.camera`): stills taken from a video.

    Instance blur never smears the whole picture, yet a frame grabbed from a video is often
    smeared everywhere by a pan or a shaking hand, or sharp on a tracked subject against a
    streaked background; without such samples the detector would learn that motion blur
    always sits next to something sharp.
    """

    #: Probability that an image-centric motion-blurred sample is whole-frame camera motion
    #: instead of instance blur.
    prob: float = Field(0.35, ge=0, le=1)
    #: Relative frequency of each kind among those its curriculum stage allows; a kind left
    #: out of the mapping is never drawn (equal odds if none allowed has a weight).
    kind_weights: dict[CameraKind, float] = {
        "shake": 1.0,
        "sweep": 0.8,
        "pan": 0.7,
        "subject_camera": 0.6,
        "frame_average": 0.8,
    }
    #: Extents (px, log-uniform, working resolution): video frames are longer exposures of
    #: a moving camera than a photo of a moving object, so both ranges sit higher than
    #: ``ExtentConfig``'s, but stay under its ``max_px`` so intensity stays below 1.
    mild_px: tuple[float, float] = (1.5, 8.0)
    strong_px: tuple[float, float] = (8.0, 30.0)
    strong_prob: float = Field(0.35, ge=0, le=1)
    #: Frames averaged by ``frame_average`` (inclusive): few frames leave distinct ghosts,
    #: many a continuous smear.
    frames: tuple[int, int] = (5, 15)
    #: Background shift as a fraction of the subject's in ``frame_average``: a nearer
    #: subject crosses more of the frame than the far background does.
    parallax: tuple[float, float] = (0.3, 1.0)
    #: Sigma (px) softening the subject matte where it meets a blurred background, so a
    #: binary matte's step does not become a seam sharper than the photo's own edge.
    feather_px: float = Field(1.0, ge=0)
    #: The change is visible when at least this fraction of the blurred area changed by at
    #: least ``visible_delta`` 8-bit levels; otherwise the sharp image is kept, unlabelled.
    visible_delta: int = Field(3, ge=1)
    min_visible_fraction: float = Field(0.02, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> CameraConfig:
        for name in ("mild_px", "strong_px", "parallax"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"camera.{name} must be an increasing positive range")
        if not 2 <= self.frames[0] <= self.frames[1]:
            raise ValueError("camera.frames must be an increasing range of at least 2 frames")
        if sum(self.kind_weights.values()) <= 0:
            raise ValueError("camera.kind_weights must not all be zero")
        return self


class SynthConfig(_Strict):
    #: Where blur is observable (labels keep only textured pixels); the worker's own rule.
    observable: ObservableConfig = ObservableConfig()
    extent: ExtentConfig = ExtentConfig()
    composite: CompositeConfig = CompositeConfig()
    coverage: CoverageConfig = CoverageConfig()
    negatives: NegativeConfig = NegativeConfig()
    sampling: SamplingConfig = SamplingConfig()
    graphics: GraphicsConfig = GraphicsConfig()
    camera: CameraConfig = CameraConfig()
    look: LookConfig = LookConfig()
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
    def _check(self) -> SynthConfig:
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
    def load(cls, path: Path | None) -> SynthConfig:
        if path is None:
            return cls()
        try:
            return cls.model_validate(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read synthesis config {path}: {exc}") from exc
