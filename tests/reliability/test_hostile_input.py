"""Hostile and broken input through a real `qc worker` (real Redis, PostgreSQL, moto's S3).

Every case must end with a clear reason recorded on its job item (and on its image row
when the bytes could be read), the worker must survive it, and the rest of the batch must
be screened. One vendor job carries every broken image beside good ones, four title jobs
carry the broken videos, and the catalog CSV that queues them has malformed rows; the
worker starts once for all of it.

What is *screened* and what *fails*, and why:

=====================  ========  ==========================================================
case                   outcome   reason (substring recorded)
=====================  ========  ==========================================================
zero-byte file         failed    file is empty (0 bytes)
truncated JPEG / PNG   failed    cannot decode image data: image file is truncated
text named .jpg        failed    not an image (unrecognised file format)
SVG / HTML named .png  failed    not an image (Pillow reads neither; SVG is never rendered)
TIFF, RATIONAL offset  failed    cannot decode image data: TypeError ... (a fuzzing find: it
                                 used to escape as TypeError, fail the whole chunk and leave
                                 the job running forever)
PNG bomb 60000x60000   failed    over the limit ... decompression bomb (from the header)
GIF frame bomb         failed    over the limit ... decompression bomb (a fuzzing find: 43
                                 bytes made Pillow fill a 4 GB buffer before the check)
animated GIF           screened  its first frame
CMYK JPEG              screened  converted to RGB
16-bit PNG             screened  scaled to 8 bits by its range
RGBA PNG               screened  alpha composited over white
1x1 image              screened  a one-pixel image is still an image
s3 key with ``..``     failed    unsafe object key ... '..' would leave the bucket or root
/etc/passwd            failed    outside the configured local roots
symlink to outside     failed    outside the configured local roots (symlinks resolved)
root/../outside path   failed    outside the configured local roots
undecodable video      failed    (job) the video holds no decodable frames
text named .mp4        failed    (job) cannot open the video
video key with ``..``  failed    (job) unsafe object key
=====================  ========  ==========================================================

This also covers the security requirement that local paths stay inside the configured
roots (tests/reliability/test_security.py refers here).
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from qc_worker.db.models import (
    Image,
    ImageStatus,
    Job,
    JobItem,
    JobItemStatus,
    JobStatus,
    Screening,
    Title,
)
from tests.qc_worker.test_image_fuzz_findings import gif_dispose_bomb, rational_strip_tiff
from tests.workers import QueueEnv, job_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"
#: Signs in a worker log that a pool process died or a task blew up.
CRASH_SIGNS = (
    "Traceback",
    "WorkerLostError",
    "exited prematurely",
    "Process 'ForkPoolWorker",
    "signal 9",
    "SIGSEGV",
    "MemoryError",
    "Unrecoverable error",
)


# --- fixtures (this module's own: the suite's conftest belongs to the other tests) -----------
@pytest.fixture
def hostile_env(queue_env: QueueEnv, tiny_model: Path) -> QueueEnv:
    queue_env.extra.update({"QC_MODEL_PATH": str(tiny_model), "OMP_NUM_THREADS": "1"})
    return queue_env


# --- payloads --------------------------------------------------------------------------------
def _encode(im: PILImage.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _picture(seed: int, w: int = 96, h: int = 72) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(PILImage.fromarray(small).resize((w, h), PILImage.BICUBIC))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 60000) -> bytes:
    """A real decompression bomb: a valid 1-bit PNG of side x side zeros (3.6 gigapixels,
    ~450 MB of raw scanlines) deflated to a few hundred KB."""
    comp = zlib.compressobj(9)
    rows = bytes(1 + (side + 7) // 8) * 1000
    body = b"".join(comp.compress(rows) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def image_payloads() -> dict[str, bytes]:
    rgb = PILImage.fromarray(_picture(1))
    jpeg, png = _encode(rgb, "JPEG", quality=90), _encode(rgb, "PNG")
    frames = [PILImage.fromarray(_picture(s)).convert("P") for s in (2, 3, 4)]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    deep = PILImage.fromarray(np.linspace(0, 65535, 96 * 72).reshape(72, 96).astype(np.uint16))
    alpha = np.dstack([_picture(5), np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (72, 1))])
    return {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "letter.jpg": b"Dear vendor, the artwork will follow next week.\n" * 5,
        "bomb.png": png_bomb(),
        "animated.gif": gif,
        "cmyk.jpg": _encode(PILImage.fromarray(_picture(6)).convert("CMYK"), "JPEG", quality=90),
        "deep16.png": _encode(deep, "PNG"),
        "alpha.png": _encode(PILImage.fromarray(alpha, "RGBA"), "PNG"),
        "one-pixel.png": _encode(PILImage.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "drawing.png": (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="60000" '
            b'height="60000"><rect width="100%" height="100%" fill="red"/></svg>'
        ),
        "strip.tif": rational_strip_tiff(),  # found by fuzzing: Pillow raised TypeError
        "frame-bomb.gif": gif_dispose_bomb(),  # found by fuzzing: 43 bytes, a 4 GB frame buffer
        "page.png": b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
    }


#: name -> (screened?, reason substring when failed, (width, height) when screened)
EXPECTED_IMAGES: dict[str, tuple[bool, str | None, tuple[int, int] | None]] = {
    "empty.jpg": (False, "file is empty (0 bytes)", None),
    "truncated.jpg": (False, "image file is truncated", None),
    "truncated.png": (False, "image file is truncated", None),
    "letter.jpg": (False, "not an image (unrecognised file format)", None),
    "bomb.png": (False, "decompression bomb", None),
    "animated.gif": (True, None, (96, 72)),
    "cmyk.jpg": (True, None, (96, 72)),
    "deep16.png": (True, None, (96, 72)),
    "alpha.png": (True, None, (96, 72)),
    "one-pixel.png": (True, None, (1, 1)),
    "drawing.png": (False, "not an image (unrecognised file format)", None),
    "page.png": (False, "not an image (unrecognised file format)", None),
    "strip.tif": (False, "cannot decode image data: TypeError", None),
    "frame-bomb.gif": (False, "decompression bomb", None),
    "coffee.jpg": (True, None, None),
    "chelsea.jpg": (True, None, None),
}


W, H, FPS = 96, 64, 10


def write_video(path: Path, seeds: list[int], seconds_each: float = 1.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened()
    for seed in seeds:
        frame = cv2.resize(
            np.random.default_rng(seed).integers(0, 256, (8, 12, 3), dtype=np.uint8),
            (W, H),
            interpolation=cv2.INTER_NEAREST,
        )
        for _ in range(round(seconds_each * FPS)):
            writer.write(frame)
    writer.release()
    return path


def undecodable_video(good: Path, out: Path) -> Path:
    """A valid MP4 container (it opens, and declares its frames) whose coded frames are all
    zero bytes: not one frame decodes."""
    data = good.read_bytes()
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    out.write_bytes(data[: at + 4] + bytes(size - 8) + data[at - 4 + size :])
    return out


def test_hostile_input_is_recorded_and_the_worker_and_the_batch_go_on(hostile_env: QueueEnv, s3_endpoint, tmp_path):
    env = hostile_env
    bucket = env.bucket
    s3 = s3_endpoint.client()

    # Images: every broken and odd one beside two good photos, under one vendor prefix.
    for name, data in image_payloads().items():
        s3.put_object(Bucket=bucket, Key=f"vendor/{name}", Body=data)
    for name in ("coffee.jpg", "chelsea.jpg"):
        s3.upload_file(str(SAMPLES / name), bucket, f"vendor/{name}")
    # Local files: one good file inside the root; a valid image outside it, reached by a
    # symlink inside the root and by a path that climbs out with '..'.
    art = env.root / "art"
    art.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", art / "rocket.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_image = outside / "private.jpg"
    shutil.copy(SAMPLES / "astronaut.jpg", secret_image)
    (art / "escape.jpg").symlink_to(secret_image)
    (art / "passwd.jpg").symlink_to("/etc/passwd")
    climbing = f"{env.root}/art/../../outside/private.jpg"
    local = {
        str(art / "rocket.jpg"): (True, None),
        "/etc/passwd": (False, "outside the configured local roots"),
        str(art / "escape.jpg"): (False, "outside the configured local roots"),
        str(art / "passwd.jpg"): (False, "outside the configured local roots"),
        climbing: (False, "outside the configured local roots"),
    }
    traversal = {
        f"s3://{bucket}/../x.jpg": "'..' would leave the bucket or root",
        f"s3://{bucket}/vendor/../../other-bucket/x.jpg": "'..' would leave the bucket or root",
    }
    out = env.qc("enqueue", "submission", "--vendor", "hostile", f"s3://{bucket}/vendor/", *local, *traversal)
    [vendor_job] = job_ids(out.stdout)

    # Videos and the catalog that names them, with malformed rows among the good ones.
    good_video = write_video(tmp_path / "good.mp4", [21, 22])
    s3.upload_file(str(good_video), bucket, "videos/good.mp4")
    s3.upload_file(str(undecodable_video(good_video, tmp_path / "zeroed.mp4")), bucket, "videos/zeroed.mp4")
    s3.put_object(Bucket=bucket, Key="videos/notes.mp4", Body=b"minutes of the meeting, not a video\n" * 40)
    catalog = env.root / "catalog.csv"
    catalog.write_bytes(
        b"\xef\xbb\xbftitle_id,name,video_uri\r\n"
        + f"t-good,A Good Title,s3://{bucket}/videos/good.mp4\r\n".encode()
        + b"t-short,only two fields\r\n"  # line 3
        + f",No Id,s3://{bucket}/videos/good.mp4\r\n".encode()  # line 4
        + f"t-good,A Good Title,s3://{bucket}/videos/good.mp4\r\n".encode()  # line 5: duplicate
        + f't-quote,"Unclosed quote,s3://{bucket}/videos/good.mp4\r\n'.encode()  # line 6
        + f"t-zeroed,Zeroed Frames,s3://{bucket}/videos/zeroed.mp4\r\n".encode()  # line 7
        + "t-latin,Caf\xe9,s3://b/v.mp4\r\n".encode("latin-1")  # line 8
        + f"t-nul,Nul\x00Name,s3://{bucket}/videos/good.mp4\r\n".encode()  # line 9
        + b"\r\n"
        + f"t-notes,Not A Video,s3://{bucket}/videos/notes.mp4\r\n".encode()  # line 11
        + f"t-climb,Climbing Key,s3://{bucket}/videos/../../v.mp4\r\n".encode()  # line 12
    )
    enqueued = env.qc("enqueue", "titles", str(catalog))
    stderr = " ".join(enqueued.stderr.split())  # the console wraps long lines
    skipped = {int(n) for n in re.findall(r"skipped \S*catalog\.csv line (\d+):", stderr)}
    assert skipped == {3, 4, 5, 6, 8, 9}, enqueued.stderr
    assert "skipped 6 bad row(s)" in enqueued.stdout
    title_jobs = job_ids(enqueued.stdout)
    assert len(title_jobs) == 4

    with env.worker() as worker:
        jobs = env.wait_jobs([vendor_job, *title_jobs], worker=worker, timeout=400)
        # The worker survived all of it: same process, and a normal job afterwards completes.
        assert worker.proc.poll() is None
        s3.upload_file(str(SAMPLES / "portrait_A000069.jpg"), bucket, "after/portrait.jpg")
        [after] = job_ids(env.qc("enqueue", "submission", "--vendor", "after", f"s3://{bucket}/after/").stdout)
        [after_job] = env.wait_jobs([after], worker=worker, timeout=120)
        assert after_job.status == JobStatus.DONE
        assert worker.proc.poll() is None
        log = worker.log()
    for sign in CRASH_SIGNS:
        assert sign not in log, f"{sign!r} in the worker log:\n{log[-4000:]}"

    by_id = {j.id: j for j in jobs}
    with env.sessions()() as s:
        # --- the vendor job: each item's outcome and reason -----------------------------------
        vendor = by_id[vendor_job]
        items = {i.uri: i for i in s.scalars(select(JobItem).where(JobItem.job_id == vendor_job))}
        expected_uris = {f"s3://{bucket}/vendor/{n}" for n in EXPECTED_IMAGES} | set(local) | set(traversal)
        # Local paths are recorded resolved (the symlinks and '..' as given: they never resolved in).
        recorded = {str(Path(u).resolve()) if u == str(art / "rocket.jpg") else u for u in expected_uris}
        assert set(items) == recorded
        assert vendor.status == JobStatus.PARTIALLY_FAILED
        n_ok = sum(ok for ok, *_ in EXPECTED_IMAGES.values()) + 1
        assert (vendor.items_total, vendor.items_done, vendor.items_failed) == (
            len(items),
            n_ok,
            len(items) - n_ok,
        )

        for name, (ok, reason, size) in EXPECTED_IMAGES.items():
            uri = f"s3://{bucket}/vendor/{name}"
            item = items[uri]
            image = s.get(Image, item.image_id) if item.image_id else None
            assert image is not None, f"{name}: no image row"
            if ok:
                assert item.status == JobItemStatus.SCREENED and item.reason is None, (
                    name,
                    item.reason,
                )
                assert image.status == ImageStatus.OK and image.vendor == "hostile"
                assert s.scalar(select(Screening.id).where(Screening.image_id == image.id)) is not None, name
                if size:
                    assert (image.width, image.height) == size, name
            else:
                assert item.status == JobItemStatus.FAILED and reason in item.reason, (
                    name,
                    item.reason,
                )
                assert image.status == ImageStatus.FAILED and image.failure_reason == item.reason, name
                assert image.sha256 and len(image.sha256) == 64  # the bytes were read and hashed
                assert s.scalar(select(Screening.id).where(Screening.image_id == image.id)) is None, name

        for uri, (ok, reason) in local.items():
            key = str(Path(uri).resolve()) if ok else uri
            item = items[key]
            if ok:
                assert item.status == JobItemStatus.SCREENED, item.reason
            else:
                assert item.status == JobItemStatus.FAILED and reason in item.reason, (
                    uri,
                    item.reason,
                )
                assert item.image_id is None  # refused before a single byte was read
        for uri, reason in traversal.items():
            assert items[uri].status == JobItemStatus.FAILED and reason in items[uri].reason, items[uri].reason
            assert "unsafe object key" in items[uri].reason

        # Nothing outside the root was read: no row for it, and its content was never screened.
        import hashlib

        secret_sha = hashlib.sha256(secret_image.read_bytes()).hexdigest()
        assert s.scalar(select(Image.id).where(Image.sha256 == secret_sha)) is None
        assert not [u for u in s.scalars(select(Image.uri)) if "passwd" in u or "outside" in u]

        # --- the title jobs ---------------------------------------------------------------------
        title_of = dict(
            s.execute(
                select(Job.id, Title.external_id).join(Title, Job.title_id == Title.id).where(Job.id.in_(title_jobs))
            ).all()
        )
        status = {title_of[j]: (by_id[j].status, by_id[j].error or "") for j in title_jobs}
        assert set(status) == {"t-good", "t-zeroed", "t-notes", "t-climb"}
        assert status["t-good"][0] == JobStatus.DONE
        good = by_id[next(j for j in title_jobs if title_of[j] == "t-good")]
        assert good.items_done >= 2 and good.items_failed == 0
        assert (
            status["t-zeroed"][0] == JobStatus.FAILED and "the video holds no decodable frames" in status["t-zeroed"][1]
        )
        assert status["t-zeroed"][1].startswith(f"s3://{bucket}/videos/zeroed.mp4: ")
        assert status["t-notes"][0] == JobStatus.FAILED and "cannot open the video" in status["t-notes"][1]
        assert status["t-climb"][0] == JobStatus.FAILED and "unsafe object key" in status["t-climb"][1]
        for external_id in ("t-zeroed", "t-notes", "t-climb"):
            job = by_id[next(j for j in title_jobs if title_of[j] == external_id)]
            assert job.finished_at is not None and job.items_total == 0

    # The reasons are what `qc jobs` shows people.
    listing = env.qc("jobs", str(vendor_job)).stdout
    assert "partially_failed" in listing and "decompression bomb" in listing and "outside the configured" in listing
