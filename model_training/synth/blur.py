"""The six motion-blur types of the paper, each as explicit parameters plus a seeded sampler.

Every type works on a *premultiplied* RGBA layer (float32, colour already multiplied by
alpha, linear light): blurring colour and alpha together keeps the background's colour
from bleeding into the moving object, and the blurred alpha is exactly the object's
smeared coverage that compositing needs. A blur returns the blurred layer, the blur
extent in pixels (a number, or a per-pixel map where it varies, as in a zoom) and, for
the edge ring, the band it is confined to.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import cv2
import numpy as np

from model_training.synth.kernels import (
    bezier_trajectory,
    effective_extent,
    filter_layer,
    kernel_from_trajectory,
    line_trajectory,
    random_walk_trajectory,
)
from model_training.synth.record import Recorded


@dataclass
class BlurOutput:
    """A blurred premultiplied layer, how far it smeared, and where it applies."""

    layer: np.ndarray
    extent: float | np.ndarray
    band: np.ndarray | None = None


class BlurParams(Protocol):
    name: ClassVar[str]

    def apply(self, layer: np.ndarray) -> BlurOutput: ...

    def reach(self) -> float:
        """How far (px) content can move, so callers can crop with enough margin."""
        ...

    def to_dict(self) -> dict: ...


class _KernelBlur(Recorded, ABC):
    """A blur that is one PSF correlation (every translation-only trajectory)."""

    @abstractmethod
    def kernel(self) -> np.ndarray: ...

    def apply(self, layer: np.ndarray) -> BlurOutput:
        k = self.kernel()
        return BlurOutput(filter_layer(layer, k), effective_extent(k))


def _angle(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.0, 180.0))


@dataclass(frozen=True)
class Straight(_KernelBlur):
    """Linear motion: the exposure integrated along a segment of ``length`` px."""

    name: ClassVar[str] = "straight"
    length: float
    angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, size: float) -> Straight:
        return cls(length=extent, angle=_angle(rng))

    def kernel(self) -> np.ndarray:
        return kernel_from_trajectory(line_trajectory(self.length, self.angle))

    def reach(self) -> float:
        return self.length / 2 + 1


@dataclass(frozen=True)
class Curved(_KernelBlur):
    """Non-linear motion along a cubic Bezier (see :func:`bezier_trajectory`)."""

    name: ClassVar[str] = "curved"
    length: float
    angle: float
    bend1: float
    bend2: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, size: float) -> Curved:
        b1 = float(rng.uniform(0.15, 0.6)) * rng.choice([-1, 1])
        b2 = float(rng.uniform(0.15, 0.6)) * (1 if rng.random() < 0.6 else -1) * np.sign(b1)
        return cls(length=extent, angle=_angle(rng), bend1=b1, bend2=float(b2))

    def kernel(self) -> np.ndarray:
        return kernel_from_trajectory(bezier_trajectory(self.length, self.angle, self.bend1, self.bend2))

    def reach(self) -> float:
        return self.length * (0.5 + abs(self.bend1) + abs(self.bend2)) + 1


@dataclass(frozen=True)
class RandomWalk(_KernelBlur):
    """Camera shake: convolution with a stochastic PSF path of effective length ``extent``."""

    name: ClassVar[str] = "random_walk"
    extent: float
    n_vertices: int
    momentum: float
    seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, size: float) -> RandomWalk:
        return cls(
            extent=extent,
            n_vertices=int(rng.integers(6, 24)),
            momentum=float(rng.uniform(0.3, 0.9)),
            seed=int(rng.integers(0, 2**31 - 1)),
        )

    def kernel(self) -> np.ndarray:
        path = random_walk_trajectory(self.extent, self.n_vertices, self.momentum, self.seed)
        return kernel_from_trajectory(path)

    def reach(self) -> float:
        return self.extent * 1.5 + 1


@dataclass(frozen=True)
class ZoomRotation(Recorded):
    """Scale and rotation drift about a centre during the exposure, integrated over warped copies.

    The centre is given relative to the instance's bounding box (0..1 on each axis) so the
    parameters stay meaningful whatever crop the layer arrives in. ``zoom`` is the total
    relative scale change over the exposure and ``rotation`` the total angle in degrees;
    the smear therefore grows with the distance from the centre, and the extent is a map.
    """

    name: ClassVar[str] = "zoom_rotation"
    zoom: float
    rotation: float
    cx: float
    cy: float
    max_extent: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, size: float) -> ZoomRotation:
        # ``size`` is the instance's half-diagonal: pick the drift that moves its far corner
        # by ``extent`` pixels, split between scale and rotation.
        radius = max(size, 4.0)
        total = extent / radius
        mix = float(rng.uniform(0.0, 1.0))
        zoom = total * math.cos(mix * math.pi / 2) * rng.choice([-1, 1])
        rotation = math.degrees(total * math.sin(mix * math.pi / 2)) * rng.choice([-1, 1])
        return cls(
            zoom=float(zoom),
            rotation=float(rotation),
            cx=float(rng.uniform(0.3, 0.7)),
            cy=float(rng.uniform(0.3, 0.7)),
            max_extent=extent,
        )

    def apply(self, layer: np.ndarray) -> BlurOutput:
        h, w = layer.shape[:2]
        ys, xs = np.nonzero(layer[..., 3] > 1e-3)
        if xs.size == 0:
            return BlurOutput(layer.copy(), 0.0)
        cx = xs.min() + self.cx * (xs.max() - xs.min())
        cy = ys.min() + self.cy * (ys.max() - ys.min())
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32) - cx, np.arange(h, dtype=np.float32) - cy)
        a0, a1 = self._affine(-0.5), self._affine(0.5)
        d = a1 - a0
        extent = np.hypot(d[0, 0] * gx + d[0, 1] * gy, d[1, 0] * gx + d[1, 1] * gy)
        n = int(np.clip(math.ceil(float(extent.max()) * 2.5), 3, 64))
        acc = np.zeros_like(layer)
        for t in np.linspace(-0.5, 0.5, n):
            m = np.zeros((2, 3), np.float64)
            m[:, :2] = self._affine(float(t))
            m[:, 2] = np.array([cx, cy]) - m[:, :2] @ np.array([cx, cy])
            acc += cv2.warpAffine(layer, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return BlurOutput(acc / n, extent.astype(np.float32))

    def _affine(self, t: float) -> np.ndarray:
        s = 1.0 + self.zoom * t
        a = math.radians(self.rotation * t)
        return s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def reach(self) -> float:
        # The centre lies in the middle 40 % of the box, so the farthest pixel is at most
        # 1.4 half-diagonals away: its smear is at most 1.4x the sampled extent.
        return 1.5 * self.max_extent + 2


@dataclass(frozen=True)
class EdgeRing(_KernelBlur):
    """Straight or curved motion kept to a band of ``band`` px either side of the instance edge.

    Fast contours smear more than interiors; the band is returned so compositing blends
    the blur in only there (with the same adaptive feathering as every other boundary).
    """

    name: ClassVar[str] = "edge_ring"
    length: float
    angle: float
    bend1: float
    bend2: float
    band: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, size: float) -> EdgeRing:
        curved = rng.random() < 0.5
        b1 = float(rng.uniform(0.15, 0.5)) * rng.choice([-1, 1]) if curved else 0.0
        b2 = float(rng.uniform(0.15, 0.5)) * rng.choice([-1, 1]) if curved else 0.0
        band = float(rng.uniform(1.0, 2.5) * extent + 2.0)
        return cls(length=extent, angle=_angle(rng), bend1=b1, bend2=b2, band=band)

    def kernel(self) -> np.ndarray:
        return kernel_from_trajectory(bezier_trajectory(self.length, self.angle, self.bend1, self.bend2))

    def apply(self, layer: np.ndarray) -> BlurOutput:
        k = self.kernel()
        inside = (layer[..., 3] >= 0.5).astype(np.uint8)
        d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
        d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
        band = (np.where(inside > 0, d_in, d_out) <= self.band).astype(np.float32)
        return BlurOutput(filter_layer(layer, k), effective_extent(k), band)

    def reach(self) -> float:
        return self.length * (0.5 + abs(self.bend1) + abs(self.bend2)) + self.band + 1


@dataclass(frozen=True)
class Rolling(Recorded):
    """Straight motion read out row by row (rolling shutter): a streak plus row-dependent offsets.

    Each row is exposed a little later than the one above, so a moving object is both
    smeared (``length``) and sheared: rows are displaced along the motion by an offset
    growing linearly over the instance (``row_shift`` px from its top to its bottom row),
    with an optional sinusoidal ``wobble`` from vibration during read-out.
    """

    name: ClassVar[str] = "rolling"
    length: float
    angle: float
    row_shift: float
    wobble: float
    wobble_period: float
    phase: float

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, size: float) -> Rolling:
        return cls(
            length=extent,
            angle=_angle(rng),
            row_shift=float(rng.uniform(0.3, 1.5) * extent * rng.choice([-1, 1])),
            wobble=float(rng.uniform(0.0, 0.3) * extent) if rng.random() < 0.5 else 0.0,
            wobble_period=float(rng.uniform(8.0, 64.0)),
            phase=float(rng.uniform(0.0, 2 * math.pi)),
        )

    def apply(self, layer: np.ndarray) -> BlurOutput:
        k = kernel_from_trajectory(line_trajectory(self.length, self.angle))
        blurred = filter_layer(layer, k)
        h, w = layer.shape[:2]
        rows = np.nonzero((layer[..., 3] > 1e-3).any(axis=1))[0]
        if rows.size == 0:
            return BlurOutput(blurred, effective_extent(k))
        top, bottom = float(rows.min()), float(rows.max())
        y = np.arange(h, dtype=np.float32)
        frac = (y - (top + bottom) / 2) / max(bottom - top, 1.0)
        off = self.row_shift * frac + self.wobble * np.sin(2 * math.pi * y / self.wobble_period + self.phase)
        a = math.radians(self.angle)
        map_x = np.arange(w, dtype=np.float32)[None, :] - (off * math.cos(a))[:, None]
        map_y = y[:, None] - (off * math.sin(a))[:, None] + np.zeros((1, w), np.float32)
        sheared = cv2.remap(
            blurred,
            map_x.astype(np.float32),
            map_y.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        return BlurOutput(sheared, effective_extent(k))

    def reach(self) -> float:
        return self.length / 2 + abs(self.row_shift) / 2 + self.wobble + 1


BLUR_TYPES: dict[str, type] = {cls.name: cls for cls in (Straight, Curved, ZoomRotation, RandomWalk, EdgeRing, Rolling)}


def blur_from_dict(d: dict) -> BlurParams:
    """Rebuild parameters recorded by ``to_dict`` (e.g. from a dataset's JSON lines)."""
    d = dict(d)
    cls = BLUR_TYPES[d.pop("type")]
    return cls(**d)
