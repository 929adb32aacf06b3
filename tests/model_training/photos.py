"""Source photos made on the fly: textured scenes with an object."""

from pathlib import Path

import cv2
import numpy as np


def make_photo(seed: int, size: tuple[int, int] = (200, 260)) -> np.ndarray:
    """A textured background with a textured, brighter object: enough detail to blur visibly."""
    rng = np.random.default_rng(seed)
    h, w = size
    noise = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h))
    img = (0.2 + 0.3 * noise) * 255
    obj = cv2.resize(rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2 + int(rng.integers(-20, 20)), h // 2), (w // 5, h // 3), 0, 0, 360, 255, -1)
    img[mask > 0] = (0.5 + 0.5 * obj[mask > 0]) * 255
    return np.clip(img, 0, 255).astype(np.uint8)


def write_photos(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"photo{i}.png"), make_photo(i)[..., ::-1])
    return folder
