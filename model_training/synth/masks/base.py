"""What every mask source is, and the small image and mask helpers they share."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from model_training.synth.instances import Instance


class MaskSourceError(Exception):
    """A mask source cannot be built or run (unknown name, missing weights or package)."""


@runtime_checkable
class MaskSource(Protocol):
    """Anything that turns an RGB uint8 HxWx3 image into instances."""

    name: str

    def __call__(self, image: np.ndarray) -> list[Instance]: ...


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")


def _image_digest(image: np.ndarray) -> bytes:
    """Content key, so per-image caches and fallback seeds do not depend on object identity."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()


def _seed_from_image(image: np.ndarray) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(_image_digest(image)[:8], "little"))


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _ellipse_kernel(size: float) -> np.ndarray:
    k = _odd(size)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _to_u8(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.uint8(255), np.uint8(0))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a_on, b_on = a > 0, b > 0
    union = np.count_nonzero(a_on | b_on)
    return np.count_nonzero(a_on & b_on) / union if union else 0.0


def _components(mask: np.ndarray, min_area: float, max_count: int) -> list[tuple[np.ndarray, int]]:
    """Largest connected components first, because the big ones are the subject."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")
    out: list[tuple[np.ndarray, int]] = []
    for idx in order[:max_count]:
        if areas[idx] < max(min_area, 1):
            break
        out.append((labels == idx + 1, int(areas[idx])))
    return out


class _LastImageCache:
    """Remembers the result for the most recent image.

    ``build_mask_sources`` shares one matte and one face detector between the foreground,
    faces and skin/hair sources; this keeps them from computing the same thing twice.
    """

    def __init__(self) -> None:
        self._entry: tuple[bytes, Any] | None = None

    def get(self, key: bytes) -> Any | None:
        entry = self._entry
        return entry[1] if entry is not None and entry[0] == key else None

    def put(self, key: bytes, value: Any) -> None:
        self._entry = (key, value)
