"""Which pixels can show motion blur at all: the textured ones.

A motion-blurred plain sky looks exactly like a sharp one, so a pixel without texture
carries no evidence either way. Labelling such pixels "blurred" inside blurred instances
and "sharp" elsewhere taught the first detector that smooth means blurred; this map lets
training leave them out of the mask losses and screening leave them out of every blurred
share. One function serves both, so labels and verdicts follow the same rule
(:class:`qc_worker.config.ObservableConfig`).

The measure is the mean gradient magnitude over a box. Blurring an edge along the motion
spreads its gradient over the smear but keeps its sum, so inside a window wider than the
smear the mean barely changes: the map of a blurred image is close to the map of its
sharp source, which is what lets screening compute it from the image it is given.
"""

from __future__ import annotations

import cv2
import numpy as np

from qc_worker.config import ObservableConfig

__all__ = ["gradient_energy", "observable_map", "observable_share"]


def gradient_energy(rgb: np.ndarray, window: int) -> np.ndarray:
    """Mean gradient magnitude of the grey image over a ``window`` box (float32 HxW).

    ``rgb`` is uint8 (0-255) or float (0-1) RGB, or already grey; the result is in grey
    levels of [0, 1] per pixel, whatever the input type.
    """
    img = np.asarray(rgb)
    scale = 1.0 / 255.0 if img.dtype == np.uint8 else 1.0
    grey = img.astype(np.float32) * scale
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
    # Sobel's 3x3 kernels weigh the centre difference by 8 in all: /8 gives levels per pixel.
    # Passed as Sobel's own scale, a power of two: the same floats as dividing afterwards,
    # without two more passes over the image.
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT_101)
    magnitude = cv2.magnitude(gx, gy)
    return cv2.blur(magnitude, (window, window), borderType=cv2.BORDER_REFLECT_101)


def observable_map(rgb: np.ndarray, config: ObservableConfig = ObservableConfig()) -> np.ndarray:
    """Bool HxW: True where the content has enough texture for blur to be seen."""
    return gradient_energy(rgb, config.window) >= config.min_gradient


def observable_share(observable: np.ndarray) -> float:
    """Share of observable pixels (0.0 for an empty map)."""
    return float(np.count_nonzero(observable)) / observable.size if observable.size else 0.0
