"""Detector speed on this machine: ours vs HiFST (PyPI ``blur-detector``) vs variance of the Laplacian.

Images per second at 512x512 and 1920x1080 on the same images in one run, with the speed
ratios, plus the peak memory of our detector on a 3840x2160 image (tiled). Where CUDA is
present, GPU throughput at batch 1, 8 and 32 in bf16. Results go to BENCHMARKS.md.

    make bench            (installs blur-detector with --no-deps, then runs this)
    .venv/bin/python bench/detector.py [--model PATH] [--seconds 5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from report import write_section

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "images"


def _image(size: tuple[int, int]) -> np.ndarray:
    from qc_worker.images import decode_image

    img = decode_image(SAMPLES / "coffee.jpg")
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def _rate(fn, seconds: float, min_calls: int = 2) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < min_calls:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def _peak_rss_mb_of(code: str) -> float:
    """Peak resident memory (MB) of a fresh Python process running ``code``.

    Read from VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child of this
    (large) benchmark process would report the parent's peak.
    """
    probe = "\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped one)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import blur_detector
    import torch

    from model_training.evaluate import laplacian_variance
    from qc_worker.detector.inference import Detector, InferenceConfig, cpu_has_fast_bf16

    # As `qc screen` serves (precision auto: bf16 only where the CPU has bf16 instructions),
    # and both arithmetics forced, so the table shows what the choice is worth here.
    served = Detector.load(args.model, device="cpu")
    det_fp32 = Detector.load(args.model, device="cpu", precision="fp32")
    det_bf16 = Detector.load(args.model, device="cpu", precision="bf16")
    # The frame rule's smaller copies cost one forward pass each: the same model without them.
    full_only = Detector.load(args.model, device="cpu", config=InferenceConfig(frame_scales=(1.0,)))
    scales = ", ".join(f"{s:g}x" for s in served.frame_scales)
    served_as = "bf16" if served.dtype is not None else "fp32"
    rows = []
    for label, size in (("512x512", (512, 512)), ("1920x1080", (1920, 1080))):
        img = _image(size)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        ours = _rate(lambda img=img: served.predict([img]), args.seconds)
        full = _rate(lambda img=img: full_only.predict([img]), args.seconds)
        batched = _rate(lambda img=img: served.predict([img] * 8), args.seconds) * 8
        ours32 = _rate(lambda img=img: det_fp32.predict([img]), args.seconds)
        # Without bf16 instructions a call takes seconds: one timed call is enough.
        ours16 = _rate(
            lambda img=img: det_bf16.predict([img]),
            args.seconds if cpu_has_fast_bf16() else 0.0,
            min_calls=1,
        )
        # HiFST is slow (seconds per image): two timed calls are enough.
        hifst = _rate(lambda gray=gray: blur_detector.detectBlur(gray, show_progress=False), 0.0, min_calls=2)
        vol = _rate(lambda img=img: laplacian_variance(img), args.seconds)
        rows.append((label, ours, full, batched, ours32, ours16, hifst, vol))

    code = (
        "import numpy as np; from qc_worker.detector.inference import Detector;"
        f"d = Detector.load({str(args.model)!r} if {args.model is not None} else None, device='cpu');"
        "img = (np.random.default_rng(0).random((2160, 3840, 3)) * 255).astype(np.uint8);"
        "d.predict([img])"
    )
    peak_4k = _peak_rss_mb_of(code)

    lines = [
        f"| image | ours as served ({served_as}, frame read at {scales}), one at a time (img/s) "
        "| ours, frame at 1x only, one at a time (img/s) | ours as served, batches of 8 (img/s) "
        "| ours fp32 (img/s) | ours bf16 (img/s) | HiFST blur-detector (img/s) | Laplacian variance (img/s) "
        "| ours as served / HiFST (one at a time; batched) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, ours, full, batched, ours32, ours16, hifst, vol in rows:
        lines.append(
            f"| {label} | {ours:.2f} | {full:.2f} | {batched:.2f} | {ours32:.2f} | {ours16:.2f} | {hifst:.3f} "
            f"| {vol:.1f} | {ours / hifst:.0f}x; {batched / hifst:.0f}x |"
        )
    table = "\n".join(lines)
    note = (
        f"Peak resident memory of a fresh process screening one 3840x2160 image (tiled, {served_as}): "
        f"{peak_4k:.0f} MB. Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"bf16 instructions (AVX512-BF16 or AMX): {'yes' if cpu_has_fast_bf16() else 'no'} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__} on the CPU "
        f"({torch.get_num_threads()} threads)."
    )
    gpu = gpu_rows(args.model) if torch.cuda.is_available() else "No GPU on this machine: GPU rows not measured."
    print(table, note, gpu, sep="\n\n")
    if not args.no_write:
        write_section(
            "bench/detector.py",
            "Detector speed",
            "`make bench` (shipped checkpoint, CPU)",
            f"{table}\n\n{note}\n\n{gpu}",
        )


def gpu_rows(model: Path | None) -> str:
    import torch

    from qc_worker.detector.inference import Detector

    det = Detector.load(model, device="cuda", precision="bf16")
    img = _image((512, 512))
    out = ["| batch (512x512, bf16) | images/s |", "|---:|---:|"]
    for b in (1, 8, 32):
        batch = [img] * b
        det.config = type(det.config)(**{**det.config.__dict__, "batch_size": b})
        torch.cuda.synchronize()
        r = _rate(lambda batch=batch: (det.predict(batch), torch.cuda.synchronize()), 3.0) * b
        out.append(f"| {b} | {r:.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
