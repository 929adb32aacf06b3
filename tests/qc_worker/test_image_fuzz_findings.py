"""Inputs found by fuzzing the image loader (fuzz/fuzz_images.py, `make fuzz`), kept as
regressions: each must end as an ImageError with a reason, never another exception (which
would escape the pipeline's per-image handling and fail a whole screening chunk)."""

from __future__ import annotations

import struct

import pytest

from qc_worker.images import ImageError, decode_image, image_size

# qc_worker.images silences Pillow's warning (its own check and message supersede it);
# pytest resets warning filters per test, so say it again here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def rational_strip_tiff() -> bytes:
    """A 4x4 8-bit grey TIFF whose StripOffsets tag has type RATIONAL instead of LONG.

    Pillow reads the header, then ``ImageFile.load`` seeks to an ``IFDRational`` and raises
    TypeError (found by atheris in under a minute)."""
    entries = [
        (256, 4, 4),
        (257, 4, 4),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 5, None),
        (278, 4, 4),
        (279, 4, 16),
    ]
    ifd_at = 8
    rational_at = ifd_at + 2 + 12 * len(entries) + 4
    pixels_at = rational_at + 8
    out = b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        if kind == 5:
            out += struct.pack("<HHII", tag, kind, 1, rational_at)
        elif kind == 3:
            out += struct.pack("<HHIHH", tag, kind, 1, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, 1, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<II", pixels_at * 3, 3)  # the strip offset, as the fraction 3x/3
    return out + bytes(range(16))


def test_a_tiff_with_a_rational_strip_offset_is_an_image_error():
    data = rational_strip_tiff()
    assert image_size(data) == (4, 4)  # the header alone is fine
    with pytest.raises(ImageError, match="cannot decode image data: TypeError"):
        decode_image(data)


def test_the_same_file_from_a_path(tmp_path):
    path = tmp_path / "odd.tif"
    path.write_bytes(rational_strip_tiff())
    with pytest.raises(ImageError, match="TypeError"):
        decode_image(path)


@pytest.mark.parametrize("kind", [1, 2, 7, 10, 11, 12])  # BYTE, ASCII, UNDEFINED, SRATIONAL, FLOAT, DOUBLE
def test_strip_offsets_of_any_odd_type_are_image_errors_or_decode(kind):
    data = bytearray(rational_strip_tiff())
    at = 8 + 2 + 12 * 5  # the StripOffsets entry
    data[at + 2 : at + 4] = struct.pack("<H", kind)
    try:
        rgb = decode_image(bytes(data))
    except ImageError:
        return
    assert rgb.shape == (4, 4, 3)


def gif_dispose_bomb(side: int = 65535) -> bytes:
    """A 43-byte GIF: a side x side canvas whose first frame covers it all with disposal
    method 2 ("restore to background"). Opening it makes Pillow allocate and fill the
    disposal buffer (side x side bytes) before anything can read the header size; with
    Pillow's guard switched off that was 4 GB and 5 s for one file (found by fuzzing)."""
    head = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    control = b"\x21\xf9\x04" + bytes([2 << 2]) + b"\x00\x00\x00\x00"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x4c\x01\x00"
    return head + control + frame + b"\x3b"


def _peak_rss_mb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


@pytest.mark.parametrize("side", [20000, 65535])
def test_a_gif_whose_frame_would_allocate_gigabytes_is_refused_first(side):
    data = gif_dispose_bomb(side)
    before = _peak_rss_mb()
    for check in (image_size, decode_image):
        with pytest.raises(ImageError, match="over the limit of 100,000,000 .*decompression bomb"):
            check(data)
    assert _peak_rss_mb() - before < 200, "Pillow allocated the frame before refusing it"


def test_pillow_never_refuses_what_the_configured_limit_accepts():
    """Pillow's guard follows the limit given: an image exactly at the limit decodes, one
    pixel over it is refused, for a small limit and one above Pillow's own default."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (101, 1)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), max_pixels=101).shape == (1, 101, 3)
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(buf.getvalue(), max_pixels=100)
    assert image_size(gif_dispose_bomb(2000), max_pixels=4_000_000) == (2000, 2000)
    with pytest.raises(ImageError, match="over the limit"):
        image_size(gif_dispose_bomb(2000), max_pixels=3_999_999)
