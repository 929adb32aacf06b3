from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def disk_image() -> tuple[np.ndarray, np.ndarray]:
    """A bright textured disk, off centre, on a dark noisy background."""
    rng = np.random.default_rng(1)
    height, width = 240, 320
    image = rng.normal(30, 10, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    disk = (xx - 200) ** 2 + (yy - 100) ** 2 < 60**2
    image[disk] = rng.normal(180, 30, (height, width, 3))[disk]
    return np.clip(image, 0, 255).astype(np.uint8), disk
