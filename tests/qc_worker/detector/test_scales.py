"""The frame read at smaller sizes: scales checked, medians over each copy's own textured pixels."""

import numpy as np
import pytest

from qc_worker.config import ObservableConfig
from qc_worker.detector.scales import check_frame_scales, coarse_frame_medians, downscale, parse_frame_scales


def _stripes(h: int, w: int, period: int = 8) -> np.ndarray:
    """Vertical stripes: texture everywhere, at every size down to a few pixels."""
    row = ((np.arange(w) // (period // 2)) % 2 * 200 + 20).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], h, axis=0), 3, axis=2)


def test_each_copy_is_judged_over_its_own_observable_pixels():
    """The left half of the copy is flat, the right half striped: a map that is 0.9 on the
    flat half and 0.3 on the striped one has median 0.3 there, however hot its flat half."""
    rgb = _stripes(80, 200)
    rgb[:, :100] = 128
    small = downscale(rgb, 0.5)
    prob = np.where(np.arange(small.shape[1])[None, :] < 50, 0.9, 0.3).astype(np.float32)
    prob = np.repeat(prob, small.shape[0], axis=0)
    medians = coarse_frame_medians(rgb, {0.5: prob})
    assert medians == {0.5: pytest.approx(0.3)}


def test_a_flat_copy_has_no_frame_evidence():
    rgb = np.full((64, 64, 3), 90, np.uint8)
    assert coarse_frame_medians(rgb, {0.5: np.ones((32, 32), np.float32)}, ObservableConfig()) == {0.5: 0.0}


def test_no_copies_no_medians_and_a_map_of_the_wrong_size_is_refused():
    rgb = _stripes(40, 40)
    assert coarse_frame_medians(rgb, {}) == {}
    with pytest.raises(ValueError, match="0.5x map"):
        coarse_frame_medians(rgb, {0.5: np.zeros((40, 40), np.float32)})


def test_downscale_keeps_at_least_one_pixel_and_leaves_full_size_alone():
    img = _stripes(3, 5)
    assert downscale(img, 1.0) is img
    assert downscale(img, 0.1).shape == (1, 1, 3)
    assert downscale(_stripes(480, 640), 0.5).shape == (240, 320, 3)


@pytest.mark.parametrize("bad", [(), (0.5,), (0.0, 1.0), (1.5, 1.0), (1.0, 1.0)])
def test_bad_frame_scales_are_refused(bad):
    with pytest.raises(ValueError):
        check_frame_scales(bad)


def test_frame_scales_parse_from_text():
    assert parse_frame_scales("1,0.5") == (1.0, 0.5)
    assert parse_frame_scales(" 1 , 0.7, 0.5 ") == (1.0, 0.7, 0.5)
    with pytest.raises(ValueError, match="commas"):
        parse_frame_scales("1;0.5")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        parse_frame_scales("1,2")
