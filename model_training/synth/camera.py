"""Whole-frame motion: the blur of a still taken from a video (camera shake, pan, both).

Instance blur (:mod:`model_training.synth.generate`) moves one object over a still
background; a video frame is the other way round: the camera moves, so the whole frame is
smeared, or everything but the subject it tracks. Every kind integrates the exposure in
linear light and works on a subject matte the way instance blur does: the subject as a
premultiplied layer over a background with the subject filled in, so neither the subject's
colour smears into the background nor a seam marks the matte's edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from model_training.synth.composite import (
    feather,
    fill_background,
    linear_to_u8,
    u8_to_linear,
)
from model_training.synth.config import CAMERA_CURRICULUM, CameraConfig
from model_training.synth.generate import Blurred, loguniform
from model_training.synth.kernels import (
    add_motion,
    bezier_trajectory,
    effective_extent,
    filter_layer,
    kernel_from_trajectory,
    line_trajectory,
    shake_trajectory,
)
from model_training.synth.record import Recorded


@dataclass
class CameraOutput:
    """The moved frame (linear light), where the motion applies, and its extent there."""

    image: np.ndarray
    area: np.ndarray
    extent: np.ndarray


@dataclass(frozen=True)
class Shake(Recorded):
    """A hand-held camera's shake: the whole frame convolved with one shake PSF.

    The fields are those of :func:`~model_training.synth.kernels.shake_trajectory`.
    """

    name: ClassVar[str] = "shake"
    extent: float
    n_steps: int
    anxiety: float
    jitter: float
    centripetal: float
    jerk_prob: float
    exposure: float
    seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float) -> Shake:
        # Boracchi & Foi's ranges; a fifth of shakes are calm, nearly straight drifts.
        calm = rng.random() < 0.2
        return cls(
            extent=extent,
            n_steps=int(rng.integers(48, 160)),
            anxiety=float(rng.uniform(0.0, 0.02) if calm else rng.uniform(0.02, 0.1)),
            jitter=float(rng.uniform(0.0, 10.0)),
            centripetal=float(rng.uniform(0.0, 0.7)),
            jerk_prob=float(rng.uniform(0.0, 0.2)),
            exposure=float(rng.uniform(0.3, 1.0)),
            seed=int(rng.integers(0, 2**31 - 1)),
        )

    def trajectory(self) -> np.ndarray:
        return shake_trajectory(
            self.extent,
            self.n_steps,
            self.seed,
            anxiety=self.anxiety,
            jitter=self.jitter,
            centripetal=self.centripetal,
            jerk_prob=self.jerk_prob,
            exposure=self.exposure,
        )

    def kernel(self) -> np.ndarray:
        return kernel_from_trajectory(self.trajectory())

    def apply(self, lin: np.ndarray, alpha: np.ndarray | None) -> CameraOutput:
        return _whole_frame(lin, self.kernel())


@dataclass(frozen=True)
class Sweep(Recorded):
    """The camera travels or pans with nothing tracked: one straight streak over the frame.

    A frame from a vehicle or a walking camera, or a pan between subjects, is smeared
    everywhere along one nearly straight line, unlike a shake's tangle; most such travel
    is horizontal, so ``angle`` sits within ``HORIZONTAL_SPREAD`` degrees of it more often
    than not. ``bend`` is the slight arc of a swung camera, as in :class:`Pan`.
    """

    name: ClassVar[str] = "sweep"
    length: float
    angle: float
    bend: float

    HORIZONTAL_PROB: ClassVar[float] = 0.6
    HORIZONTAL_SPREAD: ClassVar[float] = 15.0

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float) -> Sweep:
        if rng.random() < cls.HORIZONTAL_PROB:
            angle = float(rng.uniform(-cls.HORIZONTAL_SPREAD, cls.HORIZONTAL_SPREAD)) % 180.0
        else:
            angle = float(rng.uniform(0.0, 180.0))
        bend = float(rng.uniform(-0.05, 0.05)) if rng.random() < 0.5 else 0.0
        return cls(length=extent, angle=angle, bend=bend)

    def kernel(self) -> np.ndarray:
        return kernel_from_trajectory(bezier_trajectory(self.length, self.angle, self.bend, self.bend))

    def apply(self, lin: np.ndarray, alpha: np.ndarray | None) -> CameraOutput:
        return _whole_frame(lin, self.kernel())


@dataclass(frozen=True)
class Pan(Recorded):
    """The camera tracks a moving subject: it stays sharp, the background streaks.

    The streak is the camera's sweep, a segment of ``length`` px at ``angle`` bent
    slightly (``bend``, a fraction of the chord) because a panning hand swings in an arc.
    """

    name: ClassVar[str] = "pan"
    length: float
    angle: float
    bend: float
    feather_px: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, feather_px: float) -> Pan:
        bend = float(rng.uniform(-0.08, 0.08)) if rng.random() < 0.5 else 0.0
        return cls(length=extent, angle=float(rng.uniform(0.0, 180.0)), bend=bend, feather_px=feather_px)

    def kernel(self) -> np.ndarray:
        return kernel_from_trajectory(bezier_trajectory(self.length, self.angle, self.bend, self.bend))

    def apply(self, lin: np.ndarray, alpha: np.ndarray | None) -> CameraOutput:
        assert alpha is not None, "a pan needs a subject"
        a = _soft(alpha, self.feather_px)
        k = self.kernel()
        background = filter_layer(_background(lin, a), k)
        out = lin * a[..., None] + (1.0 - a)[..., None] * background
        # The matte decides what is subject: feathering rounds its corners, not its extent.
        area = np.maximum(a, alpha) < 0.5
        return CameraOutput(out, area, np.where(area, effective_extent(k), 0.0).astype(np.float32))


@dataclass(frozen=True)
class SubjectCamera(Recorded):
    """A shaking camera and a moving subject: the background takes the camera's PSF, the
    subject the camera's path plus its own uniform motion of ``own_length`` px at ``own_angle``.
    """

    name: ClassVar[str] = "subject_camera"
    camera: Shake
    own_length: float
    own_angle: float
    feather_px: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, feather_px: float) -> SubjectCamera:
        camera = Shake.sample(rng, extent * float(rng.uniform(0.3, 1.0)))
        return cls(
            camera=camera,
            own_length=extent * float(rng.uniform(0.5, 1.0)),
            own_angle=float(rng.uniform(0.0, 360.0)),
            feather_px=feather_px,
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "camera": self.camera.to_dict()}

    def kernels(self) -> tuple[np.ndarray, np.ndarray]:
        """(camera PSF, subject PSF)."""
        path = self.camera.trajectory()
        a = math.radians(self.own_angle)
        own = (self.own_length * math.cos(a), self.own_length * math.sin(a))
        return kernel_from_trajectory(path), kernel_from_trajectory(add_motion(path, own))

    def apply(self, lin: np.ndarray, alpha: np.ndarray | None) -> CameraOutput:
        assert alpha is not None, "a moving subject needs a subject"
        a = _soft(alpha, self.feather_px)
        k_cam, k_subj = self.kernels()
        background = filter_layer(_background(lin, a), k_cam)
        layer = filter_layer(np.concatenate([lin * a[..., None], a[..., None]], axis=2), k_subj)
        a_blur = np.clip(layer[..., 3], 0.0, 1.0)
        out = layer[..., :3] + (1.0 - a_blur)[..., None] * background
        extent = np.where(a_blur >= 0.5, effective_extent(k_subj), effective_extent(k_cam))
        return CameraOutput(out, np.ones(a.shape, bool), extent.astype(np.float32))


@dataclass(frozen=True)
class FrameAverage(Recorded):
    """``frames`` video frames averaged into one (a slow-shutter effect or frame blending).

    The subject moves along the camera's ``path`` and the background by ``parallax`` times
    as much, since the nearer subject crosses more of the frame; with few frames the copies
    stay distinct (ghosts) instead of merging into a smear.
    """

    name: ClassVar[str] = "frame_average"
    path: Shake
    frames: int
    parallax: float
    feather_px: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, cfg: CameraConfig) -> FrameAverage:
        return cls(
            path=Shake.sample(rng, extent),
            frames=int(rng.integers(cfg.frames[0], cfg.frames[1] + 1)),
            parallax=float(rng.uniform(*cfg.parallax)),
            feather_px=cfg.feather_px,
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "path": self.path.to_dict()}

    def shifts(self) -> np.ndarray:
        """The subject's offset in each frame: the path sampled evenly in time, rescaled so
        the frames' own spread is the extent (a few points spread less than the line)."""
        dense = self.path.trajectory()
        idx = np.round(np.linspace(0, len(dense) - 1, self.frames)).astype(int)
        pts = dense[idx]
        pts = pts - pts.mean(axis=0)
        spread = effective_extent(kernel_from_trajectory(pts))
        if spread < 1e-6:
            return line_trajectory(self.path.extent, 0.0, n=self.frames)
        return pts * (self.path.extent / spread)

    def apply(self, lin: np.ndarray, alpha: np.ndarray | None) -> CameraOutput:
        h, w = lin.shape[:2]
        shifts = self.shifts()
        fg_extent = effective_extent(kernel_from_trajectory(shifts))
        if alpha is None:
            out = np.mean([_shift(lin, p) for p in shifts], axis=0)
            return CameraOutput(out, np.ones((h, w), bool), np.full((h, w), fg_extent, np.float32))
        a = _soft(alpha, self.feather_px)
        layer = np.concatenate([lin * a[..., None], a[..., None]], axis=2)
        background = _background(lin, a)
        acc = np.zeros_like(lin)
        cover = np.zeros((h, w), np.float32)
        for p in shifts:
            fg = _shift(layer, p)
            fa = np.clip(fg[..., 3], 0.0, 1.0)
            acc += fg[..., :3] + (1.0 - fa)[..., None] * _shift(background, p * self.parallax)
            cover += fa
        bg_extent = effective_extent(kernel_from_trajectory(shifts * self.parallax))
        extent = np.where(cover / len(shifts) >= 0.5, fg_extent, bg_extent).astype(np.float32)
        return CameraOutput(acc / len(shifts), np.ones((h, w), bool), extent)


CAMERA_KINDS: dict[str, type] = {cls.name: cls for cls in (Shake, Sweep, Pan, SubjectCamera, FrameAverage)}


def pick_camera_kind(rng: np.random.Generator, cfg: CameraConfig, stage: int) -> str:
    """Draw a kind by ``cfg.kind_weights`` among those curriculum ``stage`` allows."""
    if stage not in CAMERA_CURRICULUM:
        raise ValueError(f"no camera curriculum for stage {stage}")
    names = CAMERA_CURRICULUM[stage]
    weights = np.array([cfg.kind_weights.get(n, 0.0) for n in names], np.float64)
    if weights.sum() <= 0:
        weights = np.ones(len(names))
    return str(names[int(rng.choice(len(names), p=weights / weights.sum()))])


def sample_camera_extent(rng: np.random.Generator, cfg: CameraConfig) -> float:
    """Log-uniform in the mild or (with ``strong_prob``) the strong range, like instance blur."""
    lo, hi = cfg.strong_px if rng.random() < cfg.strong_prob else cfg.mild_px
    return loguniform(rng, lo, hi)


def camera_motion(
    image: np.ndarray,
    subject: np.ndarray | None,
    rng: np.random.Generator,
    cfg: CameraConfig,
    stage: int,
) -> Blurred:
    """Blur a sharp frame (uint8 RGB) as if the camera moved during its exposure.

    ``subject`` is the main subject's soft matte (float32 in [0, 1]) or None; a pan or a
    moving subject needs one and becomes a shake without it. The label is the area the
    motion applies to (the whole frame, or the background of a pan), not only where pixels
    changed: textureless pixels are removed from labels later, by the observability rule.
    A change too small to see at 8 bits returns the sharp frame unlabelled.
    """
    h, w = image.shape[:2]
    kind = pick_camera_kind(rng, cfg, stage)
    has_subject = subject is not None and bool((subject >= 0.5).any())
    rec: dict = {"kind": kind}
    if kind in ("pan", "subject_camera") and not has_subject:
        rec.update(kind="shake", fallback_from=kind)
        kind = "shake"
    extent = sample_camera_extent(rng, cfg)
    if kind in ("shake", "sweep"):
        params: Shake | Sweep | Pan | SubjectCamera | FrameAverage = CAMERA_KINDS[kind].sample(rng, extent)
    elif kind == "frame_average":
        params = FrameAverage.sample(rng, extent, cfg)
    else:
        params = CAMERA_KINDS[kind].sample(rng, extent, cfg.feather_px)
    alpha = subject.astype(np.float32) if has_subject and subject is not None else None

    out = params.apply(u8_to_linear(image), alpha)
    result = linear_to_u8(out.image)

    changed = np.abs(result.astype(np.int16) - image.astype(np.int16)).max(axis=2) >= cfg.visible_delta
    n_area = int(out.area.sum())
    fraction = int((changed & out.area).sum()) / n_area if n_area else 0.0
    visible = n_area > 0 and fraction >= cfg.min_visible_fraction
    rec.update(params=params.to_dict(), visible=visible, visible_fraction=round(fraction, 4))
    if not visible:
        return Blurred(image.copy(), np.zeros((h, w), bool), np.zeros((h, w), np.float32), {"camera": rec})
    extent_px = np.where(out.area, out.extent, 0.0).astype(np.float32)
    return Blurred(result, out.area.copy(), extent_px, {"camera": rec})


def _whole_frame(lin: np.ndarray, k: np.ndarray) -> CameraOutput:
    """One PSF over the whole frame: every pixel moved, by the PSF's extent."""
    h, w = lin.shape[:2]
    return CameraOutput(filter_layer(lin, k), np.ones((h, w), bool), np.full((h, w), effective_extent(k), np.float32))


def _soft(alpha: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(feather(alpha, sigma), 0.0, 1.0)


def _background(lin: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The frame with the subject's footprint filled from its surroundings (see composite)."""
    hole = cv2.dilate((alpha > 1e-3).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return fill_background(lin, hole)


def _shift(layer: np.ndarray, p: np.ndarray) -> np.ndarray:
    h, w = layer.shape[:2]
    m = np.array([[1.0, 0.0, float(p[0])], [0.0, 1.0, float(p[1])]])
    return cv2.warpAffine(layer, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
