"""A title's video -> candidate thumbnails: fixed interval plus scene cuts, minus junk.

Frames are streamed, never held all at once: a two-hour film is ~170 000 frames, so the
sampler decodes with ``grab()`` and converts (``retrieve()``) only the frames it looks at,
and yields each kept candidate as soon as it is chosen. What is dropped, and why, is
counted in :attr:`FrameSampler.stats` for the job's record:

* black frames (mean luma below ``black_luma``: fades, slates),
* flat frames (luma spread below ``flat_std``: title cards, solid fills),
* near-duplicates (perceptual hash within ``duplicate_distance`` bits of a kept frame),
  so a static shot offers one thumbnail, not thirty.

The interval stretches to ``duration / max_frames`` on long videos so the cap spreads the
candidates over the whole film instead of spending them on the first minutes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from qc_worker.config import FrameConfig

log = logging.getLogger(__name__)

#: Frame rate assumed when the container does not say (rare; logged).
FALLBACK_FPS = 25.0
_HIST_SIZE = (64, 36)


class VideoError(Exception):
    """The video cannot be opened or holds no decodable frames; the message says which."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int | None
    width: int
    height: int

    @property
    def duration_s(self) -> float | None:
        return self.frame_count / self.fps if self.frame_count else None


@dataclass(frozen=True)
class Frame:
    """One kept candidate: RGB pixels, where it is in the video, and why it was taken."""

    index: int
    timestamp_s: float
    rgb: np.ndarray
    reason: str  # "interval" or "scene_cut"


@dataclass
class SampleStats:
    decoded: int = 0
    looked_at: int = 0
    kept: int = 0
    black: int = 0
    flat: int = 0
    duplicate: int = 0
    scene_cuts: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _open(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError("cannot open the video (not a video file, or an unsupported container/codec)")
    return cap


def probe(path: Path) -> VideoInfo:
    """Frame rate, frame count and size as the container declares them."""
    cap = _open(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if not fps or not math.isfinite(fps) or fps <= 0:
        log.warning("%s declares no frame rate; assuming %.0f fps", path.name, FALLBACK_FPS)
        fps = FALLBACK_FPS
    return VideoInfo(fps=float(fps), frame_count=count if count > 0 else None, width=width, height=height)


def _histogram(bgr: np.ndarray) -> np.ndarray:
    small = cv2.resize(bgr, _HIST_SIZE, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, hist).flatten()


@dataclass
class FrameSampler:
    config: FrameConfig
    stats: SampleStats = field(default_factory=SampleStats)

    def sample(self, path: Path, info: VideoInfo | None = None) -> Iterator[Frame]:
        """Kept candidates in time order. Raises :class:`VideoError` when nothing decodes."""
        c = self.config
        info = info or probe(path)
        interval_s = c.interval_s
        if info.duration_s:
            interval_s = max(interval_s, info.duration_s / c.max_frames)
        interval = max(1, round(interval_s * info.fps))
        stride = max(1, round(info.fps / c.analysis_fps))
        hashes: list[imagehash.ImageHash] = []
        previous: np.ndarray | None = None
        cap = _open(path)
        try:
            index = -1
            while self.stats.kept < c.max_frames and cap.grab():
                index += 1
                self.stats.decoded += 1
                on_interval = index % interval == 0
                if not on_interval and index % stride:
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    continue
                self.stats.looked_at += 1
                hist = _histogram(bgr)
                cut = (
                    previous is not None
                    and cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA) > c.scene_threshold
                )
                previous = hist
                if cut:
                    self.stats.scene_cuts += 1
                if not (on_interval or cut):
                    continue
                frame = self._keep(
                    bgr,
                    index,
                    info.fps,
                    "scene_cut" if cut and not on_interval else "interval",
                    hashes,
                )
                if frame is not None:
                    yield frame
        finally:
            cap.release()
        if self.stats.decoded == 0:
            raise VideoError("the video holds no decodable frames")

    def _keep(self, bgr: np.ndarray, index: int, fps: float, reason: str, hashes: list) -> Frame | None:
        c = self.config
        luma = cv2.cvtColor(cv2.resize(bgr, (160, 90), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        if float(luma.mean()) < c.black_luma:
            self.stats.black += 1
            return None
        if float(luma.std()) < c.flat_std:
            self.stats.flat += 1
            return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        digest = imagehash.phash(Image.fromarray(luma))
        if any(digest - h <= c.duplicate_distance for h in hashes):
            self.stats.duplicate += 1
            return None
        hashes.append(digest)
        self.stats.kept += 1
        return Frame(index=index, timestamp_s=index / fps, rgb=rgb, reason=reason)


def encode_thumbnail(rgb: np.ndarray, config: FrameConfig) -> bytes:
    """JPEG bytes, scaled down to ``thumbnail_max_side``. Deterministic for the same pixels,
    so re-running a job writes the same object and finds the same image row."""
    h, w = rgb.shape[:2]
    scale = config.thumbnail_max_side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        raise VideoError("could not encode a thumbnail")
    return buf.tobytes()
