"""Faces made hard on purpose, from a portrait and its face box, for tests and bench/faces.py.

Each kind turns one portrait into the faces of video frames and box art that the Haar
cascades miss: turned (a perspective squeeze towards a profile view), rotated, small,
dark, half covered, on a busy background, motion-blurred. The portrait is placed on a
background of the caller's (a face-free photo, or a texture) at 1920 x 1080, and the face
box comes back with it, moved as the face was.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]

KINDS = (
    "plain",
    "turned",
    "rotated_30",
    "rotated_-30",
    "rotated_60",
    "rotated_-60",
    "small",
    "dark",
    "half_covered",
    "busy_background",
    "blurred",
)
CANVAS = (1920, 1080)


def busy_texture(rng: np.random.Generator, size: tuple[int, int] = CANVAS) -> np.ndarray:
    """A high-contrast clutter of coloured strokes and blocks (no faces), RGB uint8."""
    width, height = size
    image = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8)
    image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
    for _ in range(300):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(image, p0, p1, colour, int(rng.integers(2, 12)))
    return image


def _warp_box(box: Box, matrix: np.ndarray) -> Box:
    x0, y0, x1, y1 = box
    corners = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]).reshape(-1, 1, 2)
    if matrix.shape == (2, 3):
        moved = cv2.transform(corners, matrix).reshape(-1, 2)
    else:
        moved = cv2.perspectiveTransform(corners, matrix).reshape(-1, 2)
    return (
        int(moved[:, 0].min()),
        int(moved[:, 1].min()),
        int(np.ceil(moved[:, 0].max())),
        int(np.ceil(moved[:, 1].max())),
    )


def _motion_blur(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def make_case(
    portrait: np.ndarray,
    face: Box,
    kind: str,
    background: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Box]:
    """(1920 x 1080 RGB image, face box in it) for one ``kind`` of :data:`KINDS`.

    ``portrait`` is RGB uint8 with ``face`` its face box; ``background`` is RGB uint8 of
    any size (resized to the canvas).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    canvas = cv2.resize(background, CANVAS, interpolation=cv2.INTER_AREA).copy()
    fw = face[2] - face[0]
    target = rng.uniform(24, 48) if kind == "small" else rng.uniform(140, 220)
    scale = target / fw
    person = cv2.resize(
        portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    )
    box: Box = tuple(round(v * scale) for v in face)  # type: ignore[assignment]
    ph, pw = person.shape[:2]
    alpha = np.ones((ph, pw), np.float32)

    if kind == "turned":  # squeeze the far side, as a head turned by about 50 degrees
        squeeze = 0.45
        src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
        dst = np.float32([[0, 0], [pw * squeeze, ph * 0.08], [pw * squeeze, ph * 0.92], [0, ph]])
        matrix = cv2.getPerspectiveTransform(src, dst)
        person = cv2.warpPerspective(person, matrix, (pw, ph), borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpPerspective(alpha, matrix, (pw, ph))
        box = _warp_box(box, matrix)
    elif kind.startswith("rotated_"):
        angle = float(kind.split("_")[1])
        side = int(np.hypot(pw, ph)) + 2
        shift = np.float32([[1, 0, (side - pw) / 2], [0, 1, (side - ph) / 2]])
        rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        matrix = (np.vstack([rot, [0, 0, 1]]) @ np.vstack([shift, [0, 0, 1]]))[:2]
        person = cv2.warpAffine(person, matrix, (side, side), borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(alpha, matrix, (side, side))
        box = _warp_box(box, matrix)
        ph, pw = person.shape[:2]
    elif kind == "dark":  # an underexposed night frame: gamma 2.2, a quarter of the light
        person = (255 * 0.25 * (person / 255.0) ** 2.2).astype(np.uint8)
        canvas = (255 * 0.25 * (canvas / 255.0) ** 2.2).astype(np.uint8)
    elif kind == "half_covered":  # a flat occluder over the lower half of the face
        x0, y0, x1, y1 = box
        person = person.copy()
        person[(y0 + y1) // 2 : y1 + (y1 - y0) // 4, max(0, x0 - 10) : x1 + 10] = (40, 60, 90)
    elif kind == "busy_background":  # the head alone, cut out with a soft ellipse
        x0, y0, x1, y1 = box
        alpha = np.zeros((ph, pw), np.float32)
        centre = ((x0 + x1) // 2, (y0 + y1) // 2)
        axes = (int((x1 - x0) * 0.75), int((y1 - y0) * 0.95))
        cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, (x1 - x0) / 20))
        canvas = busy_texture(rng)
    elif kind == "blurred":  # motion blur of 8-12 % of the face width, as a fast pan gives
        length = max(3, int(round((box[2] - box[0]) * rng.uniform(0.08, 0.12))))
        person = _motion_blur(person, length, float(rng.uniform(0, 180)))

    if ph >= CANVAS[1] or pw >= CANVAS[0]:
        raise ValueError("portrait too large for the canvas at this face size")
    ox = int(rng.integers(0, CANVAS[0] - pw))
    oy = int(rng.integers(0, CANVAS[1] - ph))
    region = canvas[oy : oy + ph, ox : ox + pw].astype(np.float32)
    a = alpha[..., None]
    canvas[oy : oy + ph, ox : ox + pw] = (a * person + (1 - a) * region).astype(np.uint8)
    x0, y0, x1, y1 = box
    return canvas, (x0 + ox, y0 + oy, x1 + ox, y1 + oy)
