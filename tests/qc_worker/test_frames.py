"""Video -> candidate thumbnails, on tiny videos written here with OpenCV (mp4v, 96x64, 10 fps).

Each test builds the video it needs from a few kinds of frame: black, flat grey, and
"textured" frames (blocks of random colour, one seed per shot), so what the sampler
should keep, drop and call a cut is known exactly.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from qc_worker.config import FrameConfig
from qc_worker.frames import FrameSampler, VideoError, encode_thumbnail, probe

W, H, FPS = 96, 64, 10
BLACK = np.zeros((H, W, 3), np.uint8)
FLAT = np.full((H, W, 3), 128, np.uint8)


def shot(seed: int) -> np.ndarray:
    """A frame of coloured blocks; different seeds give clearly different frames (and
    different colour histograms, so a change of seed is a scene cut)."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened(), "OpenCV cannot write mp4v video here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def sample(path: Path, **config) -> tuple[list, FrameSampler]:
    sampler = FrameSampler(FrameConfig(**config))
    return list(sampler.sample(path)), sampler


def test_probe_reads_rate_count_and_size(tmp_path):
    info = probe(write_video(tmp_path / "v.mp4", [shot(1)] * 25))
    assert (info.fps, info.frame_count, info.width, info.height) == (10.0, 25, W, H)
    assert info.duration_s == pytest.approx(2.5)


def test_black_and_flat_frames_are_dropped_and_counted(tmp_path):
    # 2 s black, 2 s flat grey, then 2 s of each of two shots; one candidate a second.
    video = write_video(tmp_path / "v.mp4", [BLACK] * 20 + [FLAT] * 20 + [shot(1)] * 20 + [shot(2)] * 20)
    frames, sampler = sample(video, interval_s=1.0)
    stats = sampler.stats
    assert stats.decoded == 80
    assert stats.black == 2 and stats.flat == 2  # the interval frames at 0, 1 s and 2, 3 s
    assert all(f.index >= 40 for f in frames)
    assert {f.index for f in frames} >= {40, 60}
    assert stats.kept == len(frames)
    for f in frames:
        assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
        assert f.timestamp_s == pytest.approx(f.index / FPS)


def test_near_duplicates_are_dropped(tmp_path):
    rng = np.random.default_rng(7)
    base = shot(3).astype(np.int16)
    # Four seconds of one static shot with a little sensor noise on every frame.
    noisy = [np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(40)]
    frames, sampler = sample(write_video(tmp_path / "v.mp4", noisy), interval_s=1.0)
    assert len(frames) == 1 and frames[0].index == 0
    assert sampler.stats.duplicate == 3  # the candidates at 1, 2 and 3 s
    assert sampler.stats.scene_cuts == 0


def test_scene_cuts_between_interval_frames_are_candidates(tmp_path):
    # A cut at frame 35 (3.5 s): with 2 s intervals the interval frames are 0, 20, 40, so
    # only the cut detector can offer the new shot before 4 s.
    video = write_video(tmp_path / "v.mp4", [shot(4)] * 35 + [shot(5)] * 25)
    frames, sampler = sample(video, interval_s=2.0, analysis_fps=5.0)
    cuts = [f for f in frames if f.reason == "scene_cut"]
    assert len(cuts) == 1 and 35 <= cuts[0].index <= 37, [(f.index, f.reason) for f in frames]
    assert sampler.stats.scene_cuts == 1
    assert [f.reason for f in frames if f.index in (0,)] == ["interval"]
    # The interval frame at 40 shows the same shot as the cut: a duplicate, not a second candidate.
    assert 40 not in {f.index for f in frames} and sampler.stats.duplicate >= 1


def test_interval_sampling_takes_one_frame_per_interval(tmp_path):
    video = write_video(tmp_path / "v.mp4", [shot(10 + i // 10) for i in range(60)])  # a new shot each second
    frames, _ = sample(video, interval_s=2.0, scene_threshold=1.0)  # cuts off: interval only
    assert [f.index for f in frames] == [0, 20, 40]
    assert {f.reason for f in frames} == {"interval"}
    assert [f.timestamp_s for f in frames] == pytest.approx([0.0, 2.0, 4.0])


def test_interval_stretches_on_long_videos_to_respect_max_frames(tmp_path):
    # 6 s, a new shot every second; 0.5 s intervals would want 12 frames, the cap is 3:
    # the interval grows to 6 s / 3 = 2 s and the three candidates span the whole video.
    video = write_video(tmp_path / "v.mp4", [shot(20 + i // 10) for i in range(60)])
    frames, sampler = sample(video, interval_s=0.5, max_frames=3, scene_threshold=1.0)
    assert [f.index for f in frames] == [0, 20, 40]
    assert sampler.stats.kept == 3


def test_max_frames_caps_the_candidates_even_with_cuts(tmp_path):
    video = write_video(tmp_path / "v.mp4", [shot(30 + i // 5) for i in range(60)])  # a cut every 0.5 s
    frames, _ = sample(video, interval_s=1.0, max_frames=4)
    assert len(frames) == 4


def test_thumbnails_are_deterministic_and_scaled(tmp_path):
    video = write_video(tmp_path / "v.mp4", [shot(40)] * 10)
    [frame], _ = sample(video)
    config = FrameConfig(thumbnail_max_side=64, jpeg_quality=90)
    first = encode_thumbnail(frame.rgb, config)
    assert first == encode_thumbnail(frame.rgb, config)
    again, _ = sample(video)
    assert encode_thumbnail(again[0].rgb, config) == first  # decoding the video again: same bytes
    thumb = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert max(thumb.shape[:2]) == 64 and thumb.shape[:2] == (43, 64)  # 96x64 -> 64x43, aspect kept
    # Small frames are never upscaled.
    big = FrameConfig(thumbnail_max_side=1920)
    assert cv2.imdecode(np.frombuffer(encode_thumbnail(frame.rgb, big), np.uint8), 1).shape[:2] == (
        H,
        W,
    )
    # Colours survive the RGB -> BGR -> JPEG round trip (not swapped).
    assert (
        np.abs(
            cv2.cvtColor(thumb, cv2.COLOR_BGR2RGB).astype(int).mean((0, 1))
            - cv2.resize(frame.rgb, (64, 43), interpolation=cv2.INTER_AREA).astype(int).mean((0, 1))
        ).max()
        < 4
    )


def test_a_file_that_is_not_a_video_raises_video_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoError, match="cannot open the video"):
        probe(path)
    with pytest.raises(VideoError, match="cannot open the video"):
        sample(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x1cftypisom" + b"\x00" * 40])
def test_empty_and_header_only_files_raise_video_error(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match="cannot open"):
        sample(path)


def test_a_video_with_zero_frames_raises_video_error(tmp_path):
    path = write_video(tmp_path / "zero.mp4", [])
    assert path.stat().st_size > 0  # a container with no frames in it
    with pytest.raises(VideoError):
        sample(path)


def _mdat_zeroed(video: Path, out: Path) -> Path:
    """The same container (header and index intact, so it opens and declares its frames),
    with every byte of the coded frames replaced by zeros: nothing decodes."""
    data = video.read_bytes()
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    start, end = at + 4, at - 4 + size
    out.write_bytes(data[:start] + bytes(end - start) + data[end:])
    return out


def test_a_valid_container_with_undecodable_frames_raises_video_error(tmp_path):
    good = write_video(tmp_path / "good.mp4", [shot(50)] * 20)
    broken = _mdat_zeroed(good, tmp_path / "broken.mp4")
    info = probe(broken)
    assert info.frame_count == 20  # the container still says 20 frames
    sampler = FrameSampler(FrameConfig())
    with pytest.raises(VideoError, match="no decodable frames"):
        list(sampler.sample(broken, info))
    assert sampler.stats.decoded == 0 and sampler.stats.kept == 0
