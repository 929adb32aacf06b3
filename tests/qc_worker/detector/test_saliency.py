"""Spectral-residual saliency, written once for screening and training."""

import numpy as np

from model_training.synth.masks import matte
from qc_worker.detector import faces, saliency


def test_an_odd_patch_on_a_regular_texture_is_what_stands_out():
    yy, xx = np.mgrid[:64, :64]
    small = (128 + 60 * np.sin(xx * 1.3) * np.sin(yy * 1.3)).astype(np.float32)
    small[36:48, 12:24] = 250.0
    sal = saliency.spectral_residual(small, 2.5)
    assert sal.shape == (64, 64) and sal.dtype == np.float32
    assert sal[36:48, 12:24].mean() > 3 * sal.mean()


def test_screening_and_training_share_the_one_implementation():
    assert faces.spectral_residual is saliency.spectral_residual
    assert matte.spectral_residual is saliency.spectral_residual
