"""Coverage-guided fuzzing of the image loader with atheris (libFuzzer for Python).

The contract under test: :func:`qc_worker.images.decode_image` (and ``image_size``), given
*any* bytes, returns an upright RGB uint8 array or raises :class:`~qc_worker.images.ImageError`.
Any other exception would escape the pipeline's per-image error handling, so a worker
would fail a whole chunk instead of recording one failed image with its reason.

    make fuzz                     # 60 s (FUZZ_SECONDS=600 make fuzz for longer)
    .venv/bin/python fuzz/fuzz_images.py --seconds 60 [--corpus DIR] [--crashes DIR]

A small seed corpus is generated on the fly (one tiny image per format and mode the loader
handles: JPEG, CMYK JPEG, PNG in every mode, 16-bit, palette with transparency, animated
GIF, WebP, BMP, TIFF, EXIF-rotated JPEG, ICO...), so the fuzzer starts inside each decoder.

Unlike plain libFuzzer, a contract violation does not stop the run: each distinct one
(exception type and the line that raised it) is written to the crashes folder with its
traceback, the run goes on, and the summary line at the end gives executions, seconds and
distinct crashes. An input on which the process's peak memory jumps by more than
``--memory-mb`` (a few hundred bytes making the decoder allocate gigabytes) is a finding
too. The exit status is 1 when any were found.

Findings so far, now regressions in tests/qc_worker/test_image_fuzz_findings.py: a TIFF
whose strip offset is a RATIONAL (Pillow raised TypeError), and a GIF whose first frame
declares 65535x65535 pixels with disposal 2 (Pillow filled a 4 GB buffer while opening it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["PIL", "qc_worker"]):
    from PIL import Image

    Image.init()  # every format plugin now, inside the block, so its code is instrumented too

    from qc_worker.images import ImageError, decode_image, image_size

# Pillow warns about odd tags in fuzzed files thousands of times a second.
warnings.simplefilter("ignore")

#: Small enough that every accepted image decodes in milliseconds (the fuzzer wants speed;
#: the limit itself is checked the same way whatever its value).
MAX_PIXELS = 4_000_000


class MemoryWarning(Warning):
    """An input on which the process's peak memory jumped (see ``--memory-mb``)."""


class Run:
    def __init__(self, crashes: Path, seconds: float, memory_mb: int) -> None:
        self.crashes = crashes
        self.seconds = seconds
        self.memory_kb = memory_mb * 1024
        self.execs = 0
        self.decoded = 0
        self.refused = 0
        self.seen: dict[str, int] = {}
        self.started = time.monotonic()

    def one(self, data: bytes) -> None:
        if time.monotonic() - self.started >= self.seconds:
            self.finish()
        self.execs += 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.check(data)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
        if grown > self.memory_kb:
            # The process's peak memory jumped on this one input: a small file made the
            # decoder allocate far more than any image under the pixel limit needs.
            self.record(
                data,
                MemoryWarning(f"peak memory grew by {grown // 1024} MB on a {len(data)}-byte input"),
            )

    def check(self, data: bytes) -> None:
        try:
            image_size(data, MAX_PIXELS)
            rgb = decode_image(data, MAX_PIXELS)
        except ImageError:
            self.refused += 1
            return
        except Exception as exc:  # noqa: BLE001 (the point: anything else is a finding)
            self.record(data, exc)
            return
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype.name != "uint8" or 0 in rgb.shape:
            self.record(data, AssertionError(f"decode_image returned {rgb.dtype} {rgb.shape}"))
            return
        self.decoded += 1

    def record(self, data: bytes, exc: BaseException) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "memory"
        key = f"{type(exc).__name__} at {where}"
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] == 1:
            self.crashes.mkdir(parents=True, exist_ok=True)
            name = f"crash-{hashlib.sha1(data).hexdigest()[:16]}"
            (self.crashes / f"{name}.bin").write_bytes(data)
            (self.crashes / f"{name}.txt").write_text(
                f"{key}\n{type(exc).__name__}: {exc}\n\n" + "".join(traceback.format_exception(exc))
            )
            print(
                f"\n== finding: {key}: {exc!r} -> {self.crashes / name}.bin",
                file=sys.stderr,
                flush=True,
            )

    def finish(self) -> None:
        """End the run here: libFuzzer would end it with C's exit(), skipping Python's
        clean-up, so the summary is printed and the process left from Python instead."""
        print(self.summary(), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1 if self.seen else 0)

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        return (
            f"fuzz_images: {self.execs} execs in {seconds:.0f} s ({self.execs / max(seconds, 1e-9):.0f}/s), "
            f"{self.decoded} decoded, {self.refused} refused with ImageError, "
            f"{len(self.seen)} distinct crash(es) ({sum(self.seen.values())} inputs)"
        )


def seed_corpus(folder: Path) -> int:
    """One small image per format and mode into ``folder``; how many were written."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.radial_gradient("L").resize((24, 16)).convert("RGB")
    seeds: dict[str, bytes] = {}

    def save(name: str, im: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        seeds[name] = buf.getvalue()

    save("rgb.jpg", base, "JPEG", quality=80)
    save("progressive.jpg", base, "JPEG", progressive=True)
    save("cmyk.jpg", base.convert("CMYK"), "JPEG")
    save("gray.jpg", base.convert("L"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    save("rotated.jpg", base, "JPEG", exif=exif)
    for mode in ("RGB", "RGBA", "L", "LA", "P", "1"):
        save(f"{mode}.png", base.convert(mode), "PNG")
    deep = Image.frombytes("I;16", base.size, bytes(range(256)) * (base.width * base.height * 2 // 256 + 1))
    save("I16.png", deep, "PNG")
    palette = base.convert("P")
    palette.info["transparency"] = 0
    save("palette-transparent.png", palette, "PNG")
    frames = [base.convert("P"), base.rotate(90).convert("P")]
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    save("rgb.webp", base, "WEBP")
    save("rgba.webp", base.convert("RGBA"), "WEBP", lossless=True)
    save("rgb.bmp", base, "BMP")
    save("rgb.tif", base, "TIFF")
    save("float.tif", base.convert("F"), "TIFF")
    save("rgb.ico", base, "ICO")
    save("rgb.ppm", base, "PPM")
    save("rgb.tga", base, "TGA")
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return len(seeds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--corpus", type=Path, help="corpus folder (kept); default: a new temporary folder")
    parser.add_argument("--crashes", type=Path, default=Path("out/fuzz-crashes"))
    parser.add_argument("--max-len", type=int, default=64 * 1024)
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=256,
        help="report an input on which peak memory grows by more than this",
    )
    args, libfuzzer_args = parser.parse_known_args(argv[1:])

    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="fuzz-images-"))
    seeds = seed_corpus(corpus)
    print(
        f"fuzz_images: {seeds} seed images in {corpus}; {args.seconds} s",
        file=sys.stderr,
        flush=True,
    )

    run = Run(args.crashes, args.seconds, args.memory_mb)
    # libFuzzer's own time limit is a backstop; Run.one ends the run on time and sums it up.
    atheris.Setup(
        [
            argv[0],
            f"-max_total_time={args.seconds + 30}",
            f"-max_len={args.max_len}",
            "-timeout=20",
            "-rss_limit_mb=4096",
            *libfuzzer_args,
            str(corpus),
        ],
        run.one,
    )
    atheris.Fuzz()
    run.finish()  # not reached unless libFuzzer stops first (e.g. -runs=N)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
