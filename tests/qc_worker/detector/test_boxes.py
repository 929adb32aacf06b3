"""Box helpers (qc_worker.detector.boxes)."""

import cv2
import numpy as np

from qc_worker.detector.boxes import integral_sums


def test_integral_sums_are_the_sums_of_the_boxes_per_channel():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    top, left = rng.integers(0, 30, 20), rng.integers(0, 45, 20)
    bottom, right = top + rng.integers(0, 8, 20), left + rng.integers(0, 9, 20)
    for pixels in (image, image[..., 0]):
        sums = integral_sums(cv2.integral(pixels, sdepth=cv2.CV_32S), top, left, bottom, right)
        direct = [pixels[t:b, x:r].sum(axis=(0, 1)) for t, x, b, r in zip(top, left, bottom, right, strict=True)]
        np.testing.assert_array_equal(sums, np.array(direct))
