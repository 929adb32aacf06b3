"""The unit every mask source produces and every blur consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Instance:
    """One region of a source image that blur may be synthesised on.

    ``mask`` is an 8-bit single-channel array the size of the image, 255 inside the
    instance and 0 outside (the paper's storage convention), so that instances can be
    cached as PNG and resized with nearest-neighbour without changing meaning.
    ``kind`` names where it came from (``foreground``, ``face``, ``skin``, ``hair``,
    ``random``, or a plug-in segmenter's name) so samplers can weight fine-grained parts.
    """

    mask: np.ndarray
    kind: str
    score: float = 1.0

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != np.uint8:
            raise ValueError(f"instance mask must be a 2-D uint8 array, got {self.mask.dtype} {self.mask.shape}")

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive ends; (0, 0, 0, 0) for an empty mask."""
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return (0, 0, 0, 0)
        return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
