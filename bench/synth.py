"""Synthesis throughput: samples per second per blur type and for the full sampler.

Measured in one run beside a plain ``cv2.filter2D`` of the same 512 px image (the
cheapest possible "blur a picture" step), so the ratio says how much work a sample is
relative to one filter pass, and beside one training step of the default model (the
MobileNetV2 U-Net ``qc-train fit`` trains, batch 8 x 256 px, channels-last, with the autocast
``--amp auto`` picks on this CPU), the figure the data pipeline must beat: training waits for
data only if a batch takes longer to make than to learn from.
Results go to BENCHMARKS.md.

    .venv/bin/python bench/synth.py [--seconds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from report import write_section

from model_training.data import BlurSynthDataset, list_sources, load_source
from model_training.synth.blur import BLUR_TYPES
from model_training.synth.composite import blur_instance
from model_training.synth.config import SamplingConfig, SynthConfig
from model_training.synth.generate import sample_blur, soft_alpha
from model_training.synth.masks import build_mask_sources, extract_instances

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "images"
SHORT_SIDE = 512


def rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``fn(i)`` over at least ``seconds`` (after one warm-up call)."""
    fn(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn(n + 1)
        n += 1
    return n / (time.perf_counter() - t0)


def photo_at_short_side(path: Path, short: int) -> np.ndarray:
    img = load_source(path)
    f = short / min(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_CUBIC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    img = photo_at_short_side(SAMPLES / "coffee.jpg", SHORT_SIDE)
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 255, -1)
    alpha = soft_alpha(mask)
    imgf = img.astype(np.float32) / 255.0
    cfg = SynthConfig()
    kernel = np.ones((15, 15), np.float32) / 225

    rows: list[tuple[str, float]] = []
    base = rate(lambda i: cv2.filter2D(img, -1, kernel), args.seconds)
    rows.append(("baseline: cv2.filter2D 15x15 on the whole image", base))
    for name in BLUR_TYPES:
        rng = np.random.default_rng(0)
        rows.append(
            (
                f"blur type `{name}` (sample params + blur + composite, one instance)",
                rate(
                    lambda i, rng=rng, name=name: blur_instance(
                        imgf, alpha, sample_blur(rng, cfg, name, mask), None, cfg.composite
                    ),
                    args.seconds,
                ),
            )
        )
    sources = build_mask_sources(["foreground", "faces", "skin_hair"])
    rows.append(
        (
            "mask extraction (foreground + faces + skin/hair), once per source",
            rate(
                lambda i: extract_instances(img if i % 2 else img[:, ::-1].copy(), sources),
                args.seconds,
            ),
        )
    )
    full_cfg = SynthConfig(sampling=SamplingConfig(out_size=SHORT_SIDE, short_side=(SHORT_SIDE, SHORT_SIDE)))
    ds = BlurSynthDataset(list_sources(SAMPLES), full_cfg, length=10_000, seed=0)
    for i in range(len(ds.sources)):
        ds.sample(i)  # fill the instance cache: training computes masks once per source
    full = rate(ds.sample, args.seconds)
    rows.append(("full sampler, 512 px (masks cached), 1 process", full))

    step_s, amp = training_step_seconds()
    need = 8 / step_s
    rows.append(
        (
            f"training step, MobileNetV2 U-Net, batch 8 x 256 px, autocast {amp} (samples it consumes/s)",
            need,
        )
    )
    width = max(len(r[0]) for r in rows)
    lines = [
        f"| {'what':<{width}} | samples/s | time per sample vs filter2D |",
        f"|{'-' * (width + 2)}|----------:|----------------------------:|",
    ]
    lines += [f"| {label:<{width}} | {r:9.1f} | {base / r:26.1f}x |" for label, r in rows]
    table = "\n".join(lines)
    note = (
        f"One worker process makes {full:.1f} samples/s at 512 px; a training step of the default "
        f"model takes {step_s:.2f} s here and so consumes {need:.1f} samples/s: one DataLoader "
        f"worker supplies {full / need:.1f}x what the CPU step needs. Machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OpenCV "
        "single-threaded per process, torch on all cores."
    )
    print(table)
    print(note)
    if not args.no_write:
        write_section(
            "bench/synth.py",
            "Synthesis throughput",
            "`.venv/bin/python bench/synth.py`, image 512 px short side",
            f"{table}\n\n{note}",
        )


def training_step_seconds(steps: int = 4) -> tuple[float, str]:
    """Median wall time of one optimisation step of the default model on this machine,
    and the autocast it ran under."""
    import torch

    from model_training.losses import CompositeLoss
    from model_training.train import TrainConfig, _autocast, resolve_amp
    from qc_worker.detector.model import BlurDetector, ModelConfig

    torch.manual_seed(0)
    defaults = TrainConfig(out=Path("unused"), sources=[])
    amp = resolve_amp(defaults.amp, torch.device("cpu"))
    config = ModelConfig(encoder=defaults.encoder, decoder_channels=defaults.decoder_channels)
    model = BlurDetector(config).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = CompositeLoss()
    x = torch.rand(8, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(8, 1, 256, 256) > 0.8).float()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with _autocast(amp, torch.device("cpu")):
            out = model(x, with_aux=True)
        out.logits, out.intensity = out.logits.float(), out.intensity.float()
        out.aux = [a.float() for a in out.aux]
        loss, _ = loss_fn(out, mask, mask * 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])), amp


if __name__ == "__main__":
    main()
