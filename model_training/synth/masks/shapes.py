"""Random shapes, the fallback where no detector finds anything."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import _check_image, _components, _seed_from_image


class RandomShapes:
    """Random ellipses, polygons and noise blobs: the fallback when nothing is detected.

    Deterministic for a given generator (or, without one, for given image content) so a
    dataset can be rebuilt exactly.
    """

    name = "random"

    def __init__(
        self,
        *,
        count: tuple[int, int] = (1, 3),
        size: tuple[float, float] = (0.15, 0.5),
        shapes: Sequence[str] = ("ellipse", "polygon", "blob"),
    ) -> None:
        if count[0] < 1 or count[1] < count[0]:
            raise ValueError(f"count must be 1 <= low <= high, got {count}")
        if not 0 < size[0] <= size[1]:
            raise ValueError(f"size must be 0 < low <= high, got {size}")
        unknown = set(shapes) - {"ellipse", "polygon", "blob"}
        if unknown or not shapes:
            raise ValueError(f"shapes must be among ellipse, polygon, blob, got {list(shapes)}")
        self.count = count
        self.size = size
        self.shapes = tuple(shapes)

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> list[Instance]:
        _check_image(image)
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            return []
        rng = rng if rng is not None else _seed_from_image(image)
        instances = []
        for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
            shape = self.shapes[int(rng.integers(len(self.shapes)))]
            diameter = max(2.0, rng.uniform(*self.size) * min(height, width))
            centre = (rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height)
            mask = np.zeros((height, width), np.uint8)
            if shape == "polygon":
                self._polygon(mask, centre, diameter, rng)
            elif shape == "blob":
                self._blob(mask, centre, diameter, rng)
            if not mask.any():
                self._ellipse(mask, centre, diameter, rng)
            instances.append(Instance(mask, "random", 1.0))
        return instances

    @staticmethod
    def _ellipse(mask: np.ndarray, centre: tuple[float, float], diameter: float, rng: np.random.Generator) -> None:
        major = diameter / 2 * rng.uniform(0.6, 1.0)
        minor = major * rng.uniform(0.4, 1.0)
        cv2.ellipse(
            mask,
            (int(centre[0]), int(centre[1])),
            (max(1, round(major)), max(1, round(minor))),
            rng.uniform(0, 180),
            0,
            360,
            255,
            thickness=-1,
        )

    @staticmethod
    def _polygon(mask: np.ndarray, centre: tuple[float, float], diameter: float, rng: np.random.Generator) -> None:
        vertices = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = diameter / 2 * rng.uniform(0.4, 1.0, vertices)
        points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)

    @staticmethod
    def _blob(mask: np.ndarray, centre: tuple[float, float], diameter: float, rng: np.random.Generator) -> None:
        side = max(3, round(diameter))
        noise = cv2.resize(
            rng.standard_normal((6, 6)).astype(np.float32),
            (side, side),
            interpolation=cv2.INTER_CUBIC,
        )
        coords = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
        radial = 1 - (coords[:, None] ** 2 + coords[None, :] ** 2)
        field = radial + 0.35 * noise / max(float(np.abs(noise).max()), 1e-6)
        blob = _components(field > 0.3, 1, 1)
        if not blob:
            return
        height, width = mask.shape
        x0, y0 = round(centre[0] - side / 2), round(centre[1] - side / 2)
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        dx1, dy1 = min(width, x0 + side), min(height, y0 + side)
        if dx1 <= dx0 or dy1 <= dy0:
            return
        patch = blob[0][0][sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
        mask[dy0:dy1, dx0:dx1][patch] = 255
