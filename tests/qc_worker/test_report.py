"""qc_worker.report and ``qc report``: the self-contained HTML page of a title or a job.

The databases are seeded through the real writes (upsert_image, save_screening,
record_image_failure, get_or_create_model_version; titles, videos, jobs and job items
through the ORM) with generated images in tmp files. The unit tests read the HTML; the
integration test renders it in headless Chromium and looks at the pixels.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from qc_worker.cli import app
from qc_worker.config import ENV_PREFIX, get_settings
from qc_worker.db.engine import make_engine, make_sessionmaker
from qc_worker.db.migrate import upgrade
from qc_worker.db.models import Job, JobItem, JobItemStatus, Title, Video
from qc_worker.db.writes import (
    get_or_create_model_version,
    record_image_failure,
    save_screening,
    upsert_image,
)
from qc_worker.detector.regions import Region
from qc_worker.detector.roi import Roi
from qc_worker.report import ReportError, job_report, resolve_title, title_report
from qc_worker.storage import LocalStore
from qc_worker.values import ImageOrigin

RED = (230, 20, 20)
GREEN = (20, 200, 20)
YELLOW = (240, 220, 40)
GREY = (128, 128, 128)
HOSTILE_NAME = "<script>alert(1)</script>.jpg"
HOSTILE_REASON = "cannot decode image data: <img src=x onerror=alert(2)>"
SIZE = (640, 360)  # every test image; thumbnails come out 480x270


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, colour: tuple[int, int, int], fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", SIZE, colour).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


@dataclass
class Seeded:
    title_id: int
    external_id: str
    job_id: int
    paths: dict[str, Path] = field(default_factory=dict)
    image_ids: dict[str, int] = field(default_factory=dict)


def seed(sessions: sessionmaker[Session], root: Path) -> Seeded:
    """One title (five images, one only through its video) and one job (five items)."""
    files = {
        "red": _write(root / "frames" / "red.jpg", RED),
        "yellow": _write(root / "frames" / "yellow.png", YELLOW, "PNG"),
        "overlay": _write(root / "overlays" / "yellow-overlay.png", GREEN, "PNG"),
        "hostile": _write(root / "<script>alert(1)<" / "script>.jpg", GREY),
        "gone": _write(root / "frames" / "gone.jpg", GREY),
        "pending": _write(root / "frames" / "pending.jpg", YELLOW),
    }
    assert str(files["hostile"]).endswith(HOSTILE_NAME)
    broken = root / "frames" / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    files["broken"] = broken
    face = Region(
        kind="face",
        label="face 1",
        bbox=(40, 40, 140, 160),
        coverage=0.02,
        area_fraction=0.05,
        mean_probability=0.1,
        mean_intensity=0.0,
        verdict="sharp",
    )
    component = Region(
        kind="component",
        label="blur 1",
        bbox=(300, 100, 500, 300),
        coverage=1.0,
        area_fraction=0.17,
        mean_probability=0.93,
        mean_intensity=0.4,
        verdict="blurred",
    )
    grid = Region(
        kind="grid",
        label="cell 1,1",
        bbox=(0, 0, 213, 120),
        coverage=0.0,
        area_fraction=0.11,
        mean_probability=0.0,
        mean_intensity=0.0,
        verdict="sharp",
    )
    scores = {"score": 1.0, "blurred_fraction": 0.42, "reasons": ["blurred 42% >= 40%"]}
    with sessions.begin() as s:
        title = Title(external_id="tt-0042", name="The <b>Bold</b> & Brave")
        s.add(title)
        s.flush()
        video = Video(title_id=title.id, uri=str(root / "video.mp4"))
        job = Job(kind="frames", title_id=title.id, items_total=5)
        s.add_all([video, job])
        s.flush()
        old = get_or_create_model_version(s, "smb-old", "a" * 64)
        new = get_or_create_model_version(s, "smb-new", "b" * 64)
        frame = {"title_id": title.id, "job_id": job.id}

        red = upsert_image(
            s,
            str(files["red"]),
            _sha(files["red"]),
            *SIZE,
            ImageOrigin("frame", timestamp_s=1.5, frame_index=36, **frame),
        )
        save_screening(s, red.id, old.id, "pass", {"score": 0.1}, {})
        save_screening(
            s,
            red.id,
            new.id,
            "reject",
            scores,
            {},
            regions=[face, component, grid],
            rois=[
                Roi("16:9", (0, 0, 640, 360), blur_fraction=0.0, safe=True, area_fraction=1.0, keeps_faces=True),
                Roi("1:1", (140, 0, 500, 360), blur_fraction=0.3, safe=False, area_fraction=0.56, keeps_faces=True),
                Roi("1:1", (0, 0, 300, 300), blur_fraction=0.0, safe=True, area_fraction=0.39, keeps_faces=True),
                Roi("2:3", (200, 0, 440, 360), blur_fraction=0.5, safe=False, area_fraction=0.38, keeps_faces=True),
                Roi("4:3", (160, 0, 640, 360), blur_fraction=0.0, safe=False, area_fraction=0.75, keeps_faces=False),
            ],
        )
        yellow = upsert_image(
            s, str(files["yellow"]), _sha(files["yellow"]), *SIZE, ImageOrigin("frame", timestamp_s=3.0, **frame)
        )
        save_screening(s, yellow.id, new.id, "pass", {"score": 0.0}, {}, overlay_uri=str(files["overlay"]))
        # Recorded with another hash: the file changed after it was screened.
        hostile = upsert_image(
            s, str(files["hostile"]), "3" * 64, *SIZE, ImageOrigin("frame", video_id=video.id, timestamp_s=4.0)
        )
        save_screening(
            s,
            hostile.id,
            new.id,
            "review",
            {"score": 0.5, "blurred_fraction": 0.12},
            {},
            regions=[face, component],
            rois=[Roi("16:9", (0, 0, 640, 360), blur_fraction=0.1, safe=True, area_fraction=1.0, keeps_faces=True)],
            overlay_uri=str(root / "overlays" / "missing.png"),
        )
        failed = record_image_failure(
            s, str(broken), HOSTILE_REASON, _sha(broken), origin=ImageOrigin(timestamp_s=5.0, **frame)
        )
        gone = upsert_image(
            s,
            str(files["gone"]),
            _sha(files["gone"]),
            *SIZE,
            ImageOrigin("frame", title_id=title.id, timestamp_s=6.0),
        )
        save_screening(s, gone.id, new.id, "pass", {"score": 0.0}, {})
        s.add_all(
            [
                JobItem(job_id=job.id, uri=red.uri, image_id=red.id, status=JobItemStatus.SCREENED),
                JobItem(job_id=job.id, uri=yellow.uri, image_id=yellow.id, status=JobItemStatus.SCREENED),
                JobItem(
                    job_id=job.id,
                    uri=failed.uri,
                    image_id=failed.id,
                    status=JobItemStatus.FAILED,
                    reason=HOSTILE_REASON,
                ),
                JobItem(
                    job_id=job.id,
                    uri="s3://artwork/missing.jpg",
                    status=JobItemStatus.FAILED,
                    reason="NoSuchKey: <gone>",
                ),
                JobItem(job_id=job.id, uri=str(files["pending"]), timestamp_s=7.25),
            ]
        )
        seeded = Seeded(
            title.id,
            title.external_id,
            job.id,
            files,
            {
                "red": red.id,
                "yellow": yellow.id,
                "hostile": hostile.id,
                "failed": failed.id,
                "gone": gone.id,
            },
        )
    files["gone"].unlink()  # screened, then deleted: the page shows a placeholder
    return seeded


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session], Seeded]]:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    seeded = seed(sessions, tmp_path / "images")
    yield url, sessions, seeded
    engine.dispose()


# --- helpers to read the page ------------------------------------------------------------
def cards(page: str) -> dict[str, str]:
    """Each card's HTML by its image id (or ``uri:<escaped uri>`` when it has no image row)."""
    out = {}
    for chunk in page.split('<section class="card ')[1:]:
        chunk = chunk.split("</section>")[0]
        m = re.search(r'data-image-id="(\d+)"', chunk)
        key = m.group(1) if m else "uri:" + re.search(r'<div class="uri">(.*?)</div>', chunk).group(1)
        out[key] = chunk
    return out


def images_in(fragment: str) -> list[tuple[str, PILImage.Image]]:
    """(data-kind or alt, decoded image) of every <img> in ``fragment``."""
    found = []
    for tag in re.findall(r"<img [^>]*>", fragment):
        src = re.search(r'src="data:image/jpeg;base64,([^"]+)"', tag).group(1)
        kind = re.search(r'data-kind="(\w+)"', tag)
        found.append(
            (
                kind.group(1) if kind else "crop",
                PILImage.open(io.BytesIO(base64.b64decode(src))).convert("RGB"),
            )
        )
    return found


def near(pixel, colour, tol=25) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour, strict=True))


# --- unit tests on the HTML --------------------------------------------------------------
def test_title_report_shows_every_image_and_counts(sqlite_db):
    _, sessions, seeded = sqlite_db
    with sessions() as s:
        report = title_report(s, "tt-0042", LocalStore())
    page = report.html
    assert report.counts == {
        "pass": 2,
        "review": 1,
        "reject": 1,
        "failed": 1,
        "unscreened": 0,
        "images": 5,
        "unreadable": 1,
    }
    assert report.counts_text() == "2 pass, 1 review, 1 reject, 1 failed"
    by_id = cards(page)
    assert set(by_id) == {str(i) for i in seeded.image_ids.values()}  # the video-only one too
    # Ordered by timestamp in the video.
    order = [int(m) for m in re.findall(r'data-image-id="(\d+)"', page)]
    ids = seeded.image_ids
    assert order == [ids["red"], ids["yellow"], ids["hostile"], ids["failed"], ids["gone"]]
    # Every image embedded: red 1 + 2 crops, yellow 1, hostile 1 + 1 crop; none for failed/gone.
    assert page.count("<img ") == 6
    for url in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page):
        assert url.startswith("data:image/jpeg;base64,")
    assert "url(" not in page and "@import" not in page and "http://" not in page
    assert "default-src 'none'" in page.replace("&#x27;", "'")


def test_hostile_text_is_escaped(sqlite_db):
    _, sessions, seeded = sqlite_db
    with sessions() as s:
        page = title_report(s, str(seeded.title_id), LocalStore()).html
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b>Bold</b>" not in page and "The &lt;b&gt;Bold&lt;/b&gt; &amp; Brave" in page
    assert page.count("<script") == 1  # the page's own status script, nothing else


def test_newest_screening_verdict_scores_crops_and_timestamps(sqlite_db):
    _, sessions, seeded = sqlite_db
    with sessions() as s:
        page = title_report(s, "tt-0042", LocalStore()).html
    red = cards(page)[str(seeded.image_ids["red"])]
    assert 'data-outcome="reject"' in red and "smb-new" in red and "smb-old" not in red
    assert "<dd>1.00</dd>" in red and "42.0%" in red
    assert "blur 1 (17.0% of image, p=0.93)" in red  # worst region: the face is only 2% blurred
    assert '<span class="sharp">face 1: 2% blurred</span>' in red
    assert "0:00:01.500 / frame 36" in red
    assert "16:9 safe, 0% blur (640×360)" in red and "1:1 safe, 0% blur (300×300)" in red
    assert "no safe crop: 2:3 (the best has 50% blur); 4:3 (every crop cuts a face)" in red
    shown = images_in(red)
    assert [k for k, _ in shown] == ["drawn", "crop", "crop"]
    thumb = shown[0][1]
    assert thumb.size == (480, 270)
    assert near(thumb.getpixel((240, 60)), RED)  # the image itself
    r, g, _ = thumb.getpixel((30, 80))  # the sharp face's green box (JPEG softens 2 px lines)
    assert g - r > 40
    assert shown[2][1].size == (160, 160)  # the 1:1 crop

    yellow = cards(page)[str(seeded.image_ids["yellow"])]
    ((kind, overlay),) = images_in(yellow)
    assert kind == "overlay" and near(overlay.getpixel((240, 135)), GREEN)  # the stored overlay

    hostile = cards(page)[str(seeded.image_ids["hostile"])]
    assert "Stored overlay not readable" in hostile and images_in(hostile)[0][0] == "drawn"
    assert "The file has changed since it was screened" in hostile
    assert page.count("The file has changed since it was screened") == 1

    failed = cards(page)[str(seeded.image_ids["failed"])]
    assert 'data-outcome="failed"' in failed and 'class="placeholder"' in failed
    gone = cards(page)[str(seeded.image_ids["gone"])]
    assert 'data-outcome="pass"' in gone and "image not readable: cannot read" in gone


def test_job_report_lists_items_in_order_with_failures(sqlite_db):
    _, sessions, seeded = sqlite_db
    with sessions() as s:
        report = job_report(s, seeded.job_id, LocalStore())
    page = report.html
    assert report.counts["images"] == 5
    assert report.counts_text() == "1 pass, 1 reject, 2 failed, 1 unscreened"
    outcomes = re.findall(r'data-outcome="(\w+)"', page)
    assert outcomes == ["reject", "pass", "failed", "failed", "unscreened"]
    assert "NoSuchKey: &lt;gone&gt;" in page and "s3://artwork/missing.jpg" in page
    assert "0:00:07.250" in page and "pending" in page
    assert page.count("<img ") == 5  # red 3, yellow 1, the pending (readable) image 1
    assert "tt-0042" in page and "frames" in page


def test_unknown_and_ambiguous_ids(sqlite_db):
    _, sessions, seeded = sqlite_db
    with sessions.begin() as s:
        s.add(Title(external_id=str(seeded.title_id + 100)))
        s.add(Title(external_id=str(seeded.title_id)))  # collides with the first title's id
    with sessions() as s:
        with pytest.raises(ReportError, match="no title with id or external id 'nope'"):
            resolve_title(s, "nope")
        with pytest.raises(ReportError, match="also the external id"):
            resolve_title(s, str(seeded.title_id))
        assert resolve_title(s, str(seeded.title_id), "id").external_id == "tt-0042"
        assert resolve_title(s, str(seeded.title_id), "external").external_id == str(seeded.title_id)
        assert resolve_title(s, str(seeded.title_id + 100)).external_id == str(seeded.title_id + 100)
        with pytest.raises(ReportError, match="no job with id 999"):
            job_report(s, 999, LocalStore())


def test_a_store_that_fails_unexpectedly_costs_placeholders_not_the_page(sqlite_db):
    class ExplodingStore:
        def read(self, uri: str) -> bytes:
            raise RuntimeError(f"boom <{uri[-5:]}>")

    _, sessions, _ = sqlite_db
    with sessions() as s:
        report = title_report(s, "tt-0042", ExplodingStore())
    assert report.counts["images"] == 5 and report.counts["unreadable"] == 4
    assert report.html.count("cannot show this image: boom &lt;") == 4
    assert "<img " not in report.html


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_db):
    url, _, seeded = sqlite_db
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QC_DATABASE_URL", url)
    get_settings.cache_clear()
    yield tmp_path, seeded
    get_settings.cache_clear()


def test_cli_writes_reports_and_refuses_unknown_ids(cli_env):
    tmp_path, seeded = cli_env
    runner = CliRunner()
    result = runner.invoke(app, ["report", "title", "tt-0042"])
    assert result.exit_code == 0, result.output
    assert "wrote report-title-tt-0042.html" in result.stdout
    assert (tmp_path / "report-title-tt-0042.html").read_text().count("<img ") == 6
    out = tmp_path / "sub" / "job.html"
    result = runner.invoke(app, ["report", "job", str(seeded.job_id), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "5 images" in result.stdout
    assert out.read_text().startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["report", "title", "no-such-title"])
    assert result.exit_code == 2 and "no title with id or external id 'no-such-title'" in result.output
    result = runner.invoke(app, ["report", "job", "4242"])
    assert result.exit_code == 2 and "no job with id 4242" in result.output


@pytest.mark.integration
def test_job_report_on_postgresql(pg_databases, tmp_path):
    create, drop = pg_databases
    url = create()
    engine = make_engine(url)
    try:
        upgrade(url)
        sessions = make_sessionmaker(engine)
        seeded = seed(sessions, tmp_path / "images")
        with sessions() as s:
            job = job_report(s, seeded.job_id, LocalStore())
            title = title_report(s, "tt-0042", LocalStore())
        assert re.findall(r'data-outcome="(\w+)"', job.html) == [
            "reject",
            "pass",
            "failed",
            "failed",
            "unscreened",
        ]
        assert title.counts_text() == "2 pass, 1 review, 1 reject, 1 failed"
        red = cards(title.html)[str(seeded.image_ids["red"])]
        assert "smb-new" in red and "smb-old" not in red and title.html.count("<img ") == 6
    finally:
        engine.dispose()
        drop(url)


# --- rendering in a real browser ---------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--virtual-time-budget=10000",
]


def _chromium() -> str:
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the report rendering test needs it. Install it "
            "with `apt-get install -y chromium` (Debian/Ubuntu; as root), or run "
            "infra/ci/ensure-chromium.sh, which `make test` runs before the tests.",
            pytrace=False,
        )
    return path


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir()
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.mark.integration
def test_report_renders_in_headless_chromium(sqlite_db, tmp_path):
    binary = _chromium()
    _, sessions, _ = sqlite_db
    with sessions() as s:
        report = title_report(s, "tt-0042", LocalStore())
    page = report.write(tmp_path / "out" / "report.html")
    url = page.resolve().as_uri()

    # 1. Every <img> decoded: the page's script writes loaded/total on <body> after load.
    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
    m = re.search(r'<body[^>]*\bdata-images-loaded="(\d+)/(\d+)"', dom)
    assert m, f"the page's status script did not run; <body> was: {re.search(r'<body[^>]*>', dom)}"
    assert m.group(1) == m.group(2) == "6"

    # 2. The pixels: the red frame and the green overlay (first two cards) are on screen.
    shot = tmp_path / "shot.png"
    _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1200", url)
    pixels = np.asarray(PILImage.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1200, 1280)
    thumb_area = 480 * 270
    for name, colour in (("red", RED), ("green", GREEN)):
        close = (np.abs(pixels - np.array(colour)) <= 20).all(axis=-1)
        ys, xs = np.nonzero(close)
        assert close.sum() > 0.6 * thumb_area, f"{name} thumbnail not rendered: {close.sum()} px"
        # One image-sized block of it, not scattered specks.
        assert xs.max() - xs.min() >= 400 and ys.max() - ys.min() >= 200, name
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, badges: not a blank page
