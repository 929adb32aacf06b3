"""Masks and checks shared by the mask-source tests."""

from __future__ import annotations

import numpy as np

from model_training.synth.instances import Instance

SKIN_RGB = (224, 172, 140)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


def assert_valid(instance: Instance, shape: tuple[int, int]) -> None:
    assert instance.mask.shape == shape
    assert instance.mask.dtype == np.uint8
    assert set(np.unique(instance.mask)) <= {0, 255}
    assert instance.area > 0


def square_mask(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


class FixedSource:
    def __init__(self, masks: list[np.ndarray], kind: str = "fixed") -> None:
        self.name = kind
        self.masks = masks

    def __call__(self, image: np.ndarray) -> list[Instance]:
        return [Instance(m.copy(), self.name) for m in self.masks]
