"""Box helpers (qc_worker.detector.boxes)."""

import cv2
import numpy as np

from qc_worker.detector.boxes import integral_image, integral_sums


def test_integral_sums_are_the_sums_of_the_boxes_per_channel():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    top, left = rng.integers(0, 30, 20), rng.integers(0, 45, 20)
    bottom, right = top + rng.integers(0, 8, 20), left + rng.integers(0, 9, 20)
    for pixels in (image, image[..., 0]):
        sums = integral_sums(cv2.integral(pixels, sdepth=cv2.CV_32S), top, left, bottom, right)
        direct = [pixels[t:b, x:r].sum(axis=(0, 1)) for t, x, b, r in zip(top, left, bottom, right, strict=True)]
        np.testing.assert_array_equal(sums, np.array(direct))


def test_the_integral_image_is_int32_only_where_no_sum_can_overflow_it():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    narrow = integral_image(image)
    # A bound so high that 40 x 30 pixels of it could pass 2**31: int64, the same sums.
    wide = integral_image(image, max_value=2**31 // (40 * 30) + 1)
    assert (narrow.dtype, wide.dtype) == (np.int32, np.int64)
    np.testing.assert_array_equal(narrow, wide)
    np.testing.assert_array_equal(narrow[-1, -1], image.sum(axis=(0, 1)))
