"""Boxes in the detector: ``(x0, y0, x1, y1)`` integer pixels with exclusive ends, so
``image[y0:y1, x0:x1]`` is the box and its area is ``(x1 - x0) * (y1 - y0)``.

Plain tuples rather than tensors (``torchvision.ops`` works on tensors): faces, regions and
crops come a handful per image, and the analysis must not need torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

__all__ = [
    "Box",
    "box_area",
    "box_intersection",
    "box_iou",
    "clip_box",
    "expand_box",
    "integral_image",
    "integral_sums",
    "union_box",
]

Box = tuple[int, int, int, int]


def box_area(box: Box) -> int:
    x0, y0, x1, y1 = box
    return max(0, x1 - x0) * max(0, y1 - y0)


def box_intersection(a: Box, b: Box) -> int:
    """Pixels two boxes share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def box_iou(a: Box, b: Box) -> float:
    inter = box_intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union else 0.0


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """Round to integers and clip into a ``width`` x ``height`` image (may become empty)."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
    y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    return (x0, y0, max(x0, x1), max(y0, y1))


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow ``box`` by ``margin`` times its width/height on every side, clipped."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return clip_box((x0 - dx, y0 - dy, x1 + dx, y1 + dy), width, height)


def union_box(boxes: Iterable[Box]) -> Box | None:
    """The smallest box holding every non-empty box given; None when there is none."""
    boxes = [b for b in boxes if box_area(b) > 0]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def integral_image(values: np.ndarray, max_value: int = 255) -> np.ndarray:
    """The integral image ((H+1) x (W+1), or (H+1) x (W+1) x C for HxWxC) of uint8
    ``values`` no larger than ``max_value``: int32 where no sum can overflow it, since
    gathering int32 cells is about a third cheaper than wider ones, else int64. The sums
    are the same integers either way."""
    exact = values.shape[0] * values.shape[1] * max_value < 2**31
    integral = cv2.integral(values, sdepth=cv2.CV_32S if exact else cv2.CV_64F)
    return integral if exact else integral.astype(np.int64)


def integral_sums(
    integral: np.ndarray, top: np.ndarray, left: np.ndarray, bottom: np.ndarray, right: np.ndarray
) -> np.ndarray:
    """Sums of rows ``top:bottom`` and columns ``left:right`` of the image whose integral
    image ((H+1) x (W+1), or (H+1) x (W+1) x C: one sum per channel) is given, for every
    box of the broadcast index arrays, in the integral's own type.

    The four corners are gathered with ``np.take`` on flat indices: the same values as
    ``integral[rows, cols]`` at a quarter of the cost of that broadcast fancy indexing, which
    matters for tens of thousands of crop candidates or every cell of every face crop.
    """
    flat, stride = integral.reshape(-1, *integral.shape[2:]), integral.shape[1]
    upper, lower = top * stride, bottom * stride
    return (
        np.take(flat, lower + right, axis=0)
        - np.take(flat, upper + right, axis=0)
        - np.take(flat, lower + left, axis=0)
        + np.take(flat, upper + left, axis=0)
    )
