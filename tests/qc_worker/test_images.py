"""Decoding: every mode becomes upright RGB; every bad input becomes ImageError with a reason."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qc_worker.images import ImageError, decode_image, image_size


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


RGB = np.zeros((20, 30, 3), np.uint8)
RGB[:, :15] = (200, 30, 10)


@pytest.mark.parametrize(
    "im,fmt",
    [
        (Image.fromarray(RGB), "PNG"),
        (Image.fromarray(RGB).convert("L"), "PNG"),
        (Image.fromarray(RGB).convert("P"), "PNG"),
        (Image.fromarray(RGB).convert("CMYK"), "JPEG"),
        (Image.fromarray(RGB).convert("RGBA"), "PNG"),
        (Image.fromarray(RGB[..., 0].astype(np.uint16) * 257).convert("I;16"), "PNG"),
    ],
    ids=["rgb", "gray", "palette", "cmyk", "rgba", "16bit"],
)
def test_every_mode_decodes_to_rgb(im, fmt):
    out = decode_image(_encode(im, fmt))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[:, :15].mean() > out[:, 15:].mean() + 20


def test_alpha_is_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out == 255).all()


def test_exif_orientation_is_applied():
    im = Image.fromarray(np.zeros((10, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(_encode(im, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (40, 10)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"hello, this is text and not an image", "not an image"),
        (_encode(Image.fromarray(RGB), "JPEG")[:200], "cannot read image header"),
        (
            _encode(
                Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)),
                "JPEG",
            )[:6000],
            "truncated",
        ),
        (
            _encode(
                Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)),
                "PNG",
            )[:20000],
            "truncated|cannot decode",
        ),
        (_png_header_only(30000, 30000), "over the limit"),
    ],
    ids=[
        "zero-bytes",
        "text",
        "truncated-header",
        "truncated-jpeg",
        "truncated-png",
        "huge-header",
    ],
)
def test_bad_input_gives_a_clear_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data, max_pixels=100_000_000)


def test_the_pixel_limit_is_checked_from_the_header_and_is_configurable(tmp_path):
    assert image_size(_png_header_only(30000, 30000), max_pixels=10**9) == (30000, 30000)
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(_encode(Image.fromarray(RGB), "PNG"), max_pixels=100)
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(missing)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_image_error(data):
    try:
        out = decode_image(data, max_pixels=4_000_000)
    except ImageError:
        return
    assert out.ndim == 3 and out.shape[2] == 3
