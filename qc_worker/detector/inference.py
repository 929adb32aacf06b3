"""Running the detector on real artwork: any size, any count, on CPU or GPU.

The checkpoint is loaded and verified once per process. Small images run whole, batched
with others of the same size; large ones run in overlapping tiles blended with a smooth
window, so 4K artwork fits in memory on a GPU and on a 2-core CPU alike and tile seams
never show in the maps.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from qc_worker.detector.checkpoint import CheckpointMeta, load_checkpoint
from qc_worker.detector.model import BlurDetector, fold_batchnorm
from qc_worker.detector.scales import check_frame_scales, downscale

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "detector.safetensors"
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class Prediction:
    """Blur probability and intensity maps at the image's own resolution."""

    probability: np.ndarray
    intensity: np.ndarray
    seconds: float
    #: Scale below 1 -> probability map of the image downscaled to it (at that size), for
    #: the whole-frame rule (:mod:`qc_worker.detector.scales`); empty at full size only.
    coarse: dict[float, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceConfig:
    #: Images with more pixels than this run in tiles (1080p still runs whole: one pass
    #: is twice as fast as overlapping tiles and needs about 1.4 GB on the CPU).
    tile_above_pixels: int = 2_500_000
    tile: int = 1024
    overlap: int = 128
    batch_size: int = 8
    #: Tiles per forward pass: small, so a 4K image stays near 1.5 GB peak on the CPU.
    tile_batch: int = 2
    #: Smallest side fed to the network; smaller images are reflect-padded, never upscaled
    #: (upscaling would soften them and look like blur).
    min_side: int = 64
    #: Sizes the whole-frame rule reads its median at (:mod:`qc_worker.detector.scales`);
    #: None: the checkpoint's own, calibrated with its thresholds (full size only for a
    #: checkpoint that names none).
    frame_scales: tuple[float, ...] | None = None


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("QC_DEVICE=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX).

    bf16 autocast is only a speed-up where the CPU has bf16 instructions: there the
    MobileNetV2 detector ran about 2.5x faster than in fp32. On an AVX2-only CPU oneDNN
    has no bf16 kernels for its depthwise convolutions and PyTorch falls back to a slow
    reference convolution: 3.26 s against 0.28 s per 512x512 image in fp32 (one thread).
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def pick_dtype(device: torch.device, precision: Precision) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32. ``auto`` takes bf16 where the hardware has
    it (GPUs with bf16, CPUs per :func:`cpu_has_fast_bf16`), fp16 on older GPUs, else fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def serving_model(model: BlurDetector, device: torch.device) -> BlurDetector:
    """``model`` as screening runs it on ``device``: in eval mode, BatchNorm folded into the
    convolutions, channels-last on the CPU (oneDNN's fast layout). ``qc-train evaluate``
    judges this same model, so its thresholds are chosen on the maps screening sees."""
    model = fold_batchnorm(model.to(device).eval())
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def _window(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights: flat in the middle, raised-cosine ramps over the overlap."""
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, overlap + 2)[1:-1])
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return w


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


class Detector:
    """A loaded, verified detector ready to screen images."""

    def __init__(
        self,
        model: BlurDetector,
        meta: CheckpointMeta,
        device: torch.device,
        dtype: torch.dtype | None,
        config: InferenceConfig = InferenceConfig(),
    ) -> None:
        self.model = serving_model(model, device)
        self.meta = meta
        self.device = device
        self.dtype = dtype
        self.config = config
        self.frame_scales = check_frame_scales(config.frame_scales or meta.thresholds.get("frame_scales") or (1.0,))

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        device: str = "auto",
        precision: Precision = "auto",
        config: InferenceConfig = InferenceConfig(),
    ) -> Detector:
        """Load and verify a checkpoint (the shipped one by default)."""
        dev = pick_device(device)
        model, meta = load_checkpoint(path or SHIPPED_CHECKPOINT, device="cpu")
        log.info(
            "loaded detector %s (%s, checksum %s) on %s",
            path or SHIPPED_CHECKPOINT,
            meta.model.encoder,
            meta.checksum[:12],
            dev,
        )
        return cls(model, meta, dev, pick_dtype(dev, precision), config)

    @property
    def thresholds(self) -> dict:
        return self.meta.thresholds

    @property
    def pixel_threshold(self) -> float:
        """The model version's pixel threshold (0.5 for a checkpoint that was never calibrated)."""
        return float(self.thresholds.get("pixel", 0.5))

    @property
    def frame_threshold(self) -> float | None:
        """The model version's whole-frame threshold; None: the rule is off for this model."""
        frame = self.thresholds.get("frame")
        return None if frame is None else float(frame)

    def _autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 -> probability and intensity, each (N, H, W) float32."""
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.model(x, with_aux=False)
        prob = torch.sigmoid(out.logits.float())[:, 0].cpu().numpy()
        inten = out.intensity.float()[:, 0].cpu().numpy()
        return prob, inten

    def _pad_small(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        h, w = image.shape[:2]
        m = self.config.min_side
        if h >= m and w >= m:
            return image, (h, w)
        mode = "reflect" if min(h, w) > 1 else "edge"
        return np.pad(image, ((0, max(0, m - h)), (0, max(0, m - w)), (0, 0)), mode=mode), (h, w)

    def _tiled(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        h, w = image.shape[:2]
        tile_h, tile_w = min(c.tile, h), min(c.tile, w)
        ys, xs = _starts(h, tile_h, c.overlap), _starts(w, tile_w, c.overlap)
        wy = _window(tile_h, c.overlap if len(ys) > 1 else 0)
        wx = _window(tile_w, c.overlap if len(xs) > 1 else 0)
        weight = np.outer(wy, wx)
        acc_p = np.zeros((h, w), np.float32)
        acc_i = np.zeros((h, w), np.float32)
        norm = np.zeros((h, w), np.float32)
        boxes = [(y, x) for y in ys for x in xs]
        for i in range(0, len(boxes), c.tile_batch):
            chunk = boxes[i : i + c.tile_batch]
            tiles = np.stack([image[y : y + tile_h, x : x + tile_w] for y, x in chunk])
            prob, inten = self._forward(tiles)
            for (y, x), p, q in zip(chunk, prob, inten, strict=True):
                acc_p[y : y + tile_h, x : x + tile_w] += p * weight
                acc_i[y : y + tile_h, x : x + tile_w] += q * weight
                norm[y : y + tile_h, x : x + tile_w] += weight
        norm = np.maximum(norm, 1e-6)
        return acc_p / norm, acc_i / norm

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Maps for each RGB uint8 image, in order, with the probability of each smaller
        copy the frame rule reads (``frame_scales``). Same-size images share forward passes."""
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
        results = self._predict_at_size(images)
        for scale in self.frame_scales:
            if scale == 1.0:
                continue
            t0 = time.perf_counter()
            small = self._predict_at_size([downscale(img, scale) for img in images])
            each = (time.perf_counter() - t0) / max(1, len(images))
            for r, s in zip(results, small, strict=True):
                r.coarse[scale] = s.probability
                r.seconds += each
        return results

    def _predict_at_size(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Maps for each image at its own size: in tiles when large, else batched by size."""
        results: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            if h * w > self.config.tile_above_pixels:
                t0 = time.perf_counter()
                prob, inten = self._tiled(img)
                results[i] = Prediction(prob, inten, time.perf_counter() - t0)
            else:
                groups[self._pad_small(img)[0].shape[:2]].append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.config.batch_size):
                chunk = idx[start : start + self.config.batch_size]
                padded = [self._pad_small(images[i]) for i in chunk]
                t0 = time.perf_counter()
                prob, inten = self._forward(np.stack([p for p, _ in padded]))
                each = (time.perf_counter() - t0) / len(chunk)
                for j, (i, (_, (h, w))) in enumerate(zip(chunk, padded, strict=True)):
                    results[i] = Prediction(prob[j, :h, :w].copy(), inten[j, :h, :w].copy(), each)
        return [r for r in results if r is not None]
