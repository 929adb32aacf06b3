"""Decoding untrusted image bytes into upright 8-bit RGB, or a clear reason why not.

Artwork arrives in every mode an encoder can write (grayscale, 16-bit, alpha, CMYK,
palette, EXIF-rotated) and sometimes not as an image at all. Everything goes through
:func:`decode_image`, which either returns an RGB array or raises :class:`ImageError`
with a reason fit for a database row; no other exception escapes for bad input. The
pixel limit is checked from the header, before any pixel is decoded, so a small file
declaring 30000x30000 pixels costs nothing; Pillow's own guard, at the same limit, covers
what its plugins allocate while reading the header (GIF frames, icon sub-images).
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qc_worker.vocabulary import FailureKind

#: A default generous enough for 8K artwork; Settings.max_image_pixels overrides it.
DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = 1

# Pillow's own decompression-bomb guard stays on, set on every call to the configured limit
# (see _pillow_guard): its plugins check it before they allocate frames, disposal buffers
# and sub-images *while opening* a file, before the header size can be checked here. With
# the guard off, a 43-byte GIF whose first frame declares 65535x65535 pixels and
# "restore to background" made Image.open fill a 4 GB buffer (found by fuzzing). Pillow
# warns from half its limit on; our own check and message supersede the warning.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _pillow_guard(max_pixels: int) -> None:
    """Pillow refuses above ``2 * MAX_IMAGE_PIXELS``: never less than ``max_pixels`` (what
    we accept, Pillow accepts), never more than one pixel over it. Process-wide, as Pillow
    has it; a process uses one configured limit."""
    Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2


def _bomb(exc: Exception, max_pixels: int) -> ImageError:
    found = _PILLOW_BOMB_PIXELS.search(str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "larger"
    return ImageError(
        f"image is {size}, over the limit of {max_pixels:,} (refused as a possible decompression bomb)",
        FailureKind.TOO_LARGE,
    )


class ImageError(Exception):
    """The input is not an image this system can screen; the message says why and
    ``kind`` says it in the metrics' words (too large, missing, else cannot be decoded)."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.DECODE) -> None:
        super().__init__(message)
        self.kind = kind


# Malformed input: Pillow documents OSError/SyntaxError/ValueError for bad files, but crafted
# files reach code paths that raise anything else: fuzzing (fuzz/fuzz_images.py) found a
# TIFF whose strip offset is a RATIONAL making ImageFile.load raise TypeError. Any such
# exception is the file's fault, so it becomes an ImageError too (MemoryError excepted:
# that is the machine's state, not the file's); otherwise it would escape the pipeline's
# per-image handling and fail a whole screening chunk, leaving its job running forever.


def _limit_check(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (refused as a possible decompression bomb)",
            FailureKind.TOO_LARGE,
        )


def image_size(data: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone; :class:`ImageError` if unreadable or too large."""
    with _open(data, max_pixels) as im:
        return im.size


def decode_image(data: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Upright RGB uint8 (H, W, 3) from file bytes or a path, whatever the source mode.

    Alpha is composited over white (artwork is shown on light and dark pages alike; white
    keeps transparent areas flat, so they read as sharp-but-empty rather than as edges).
    16-bit images are scaled to 8 bits by their range, CMYK and palette images converted,
    and animated images screened on their first frame.
    """
    with _open(data, max_pixels) as im:
        try:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
        except Image.DecompressionBombError as exc:
            raise _bomb(exc, max_pixels) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"cannot decode image data: {exc}") from exc
        except MemoryError:
            raise
        except Exception as exc:  # malformed input: see the note above _limit_check
            raise ImageError(f"cannot decode image data: {type(exc).__name__}: {exc}") from exc


def _open(data: bytes | Path, max_pixels: int) -> Image.Image:
    if isinstance(data, (bytes, bytearray)):
        if len(data) == 0:
            raise ImageError("file is empty (0 bytes)")
        source = io.BytesIO(data)
    else:
        path = Path(data)
        try:
            if path.stat().st_size == 0:
                raise ImageError("file is empty (0 bytes)")
        except OSError as exc:
            kind = FailureKind.MISSING if isinstance(exc, FileNotFoundError) else FailureKind.STORAGE
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}", kind) from exc
        source = path
    _pillow_guard(max_pixels)
    try:
        im = Image.open(source)
    except UnidentifiedImageError as exc:
        raise ImageError("not an image (unrecognised file format)") from exc
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image header: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # malformed input: see the note above _limit_check
        raise ImageError(f"cannot read image header: {type(exc).__name__}: {exc}") from exc
    width, height = im.size
    if min(width, height) < MIN_SIDE:
        im.close()
        raise ImageError(f"image has no pixels ({width}x{height})")
    try:
        _limit_check(width, height, max_pixels)
    except ImageError:
        im.close()
        raise
    return im


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = np.round(scaled).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return np.asarray(flat, dtype=np.uint8).copy()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
