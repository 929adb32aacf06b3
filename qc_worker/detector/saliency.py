"""Spectral-residual saliency (Hou & Zhang, CVPR 2007): what is statistically unusual in an
image, from the residual of its log amplitude spectrum.

Written here because opencv-contrib's ``cv2.saliency`` is not in the headless build. One
implementation serves both screening (the salient foreground of
:mod:`qc_worker.detector.faces`) and training (the GrabCut seeds of
``model_training.synth.masks.matte``), so the two find subjects the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["spectral_residual"]


def spectral_residual(small: np.ndarray, sigma: float) -> np.ndarray:
    """Saliency (float32, not normalised) of a small grey float32 thumbnail, smoothed by a
    Gaussian of ``sigma`` pixels. Run it on a thumbnail (64 x 64 is the paper's size): the
    residual is meant for the coarse layout of an image, and an FFT of a full frame is slow."""
    spectrum = np.fft.fft2(np.asarray(small, np.float32))
    log_amplitude = np.log(np.abs(spectrum) + 1e-6).astype(np.float32)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3), borderType=cv2.BORDER_REFLECT)
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    return cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), sigma)
