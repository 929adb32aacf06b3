"""The screening flow with a real (tiny, untrained) checkpoint and real databases.

Verdict quality belongs to the shipped model's end-to-end tests; here the flow itself:
bad files become recorded failures and the batch goes on, rows land in SQLite and
PostgreSQL, re-screening is idempotent, overlays are written, and `qc screen` behaves.
"""

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from typer.testing import CliRunner

from qc_worker.cli import app
from qc_worker.config import Settings
from qc_worker.db.engine import make_engine, make_sessionmaker
from qc_worker.db.migrate import upgrade
from qc_worker.db.models import BlurRegion, CropRoi, Screening
from qc_worker.db.models import Image as ImageRow
from qc_worker.detector.checkpoint import save_checkpoint
from qc_worker.detector.inference import Detector
from qc_worker.detector.model import BlurDetector, ModelConfig
from qc_worker.pipeline import Screener, load_detector
from qc_worker.storage import LocalStore

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"
TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, BlurDetector(TINY).eval(), thresholds={"pixel": 0.5})
    return path


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def batch_dir(tmp_path) -> Path:
    d = tmp_path / "batch"
    d.mkdir()
    for name in ("coffee.jpg", "portrait_A000069.jpg"):
        shutil.copy(SAMPLES / name, d / name)
    good = (SAMPLES / "chelsea.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "notes.jpg").write_text("this is a text file, not a picture")
    (d / "empty.jpg").write_bytes(b"")
    (d / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    return d


REASONS = {
    "truncated.jpg": "truncated",
    "notes.jpg": "not an image",
    "empty.jpg": "empty",
    "bomb.png": "over the limit",
}


def _screen(url: str, checkpoint: Path, folder: Path, overlays: Path | None = None, **settings_kw):
    settings = Settings(_env_file=None, database_url=url, max_image_pixels=50_000_000, batch_size=4, **settings_kw)
    upgrade(url)
    engine = make_engine(url)
    screener = Screener(
        settings,
        Detector.load(checkpoint, device="cpu"),
        make_sessionmaker(engine),
        overlay_store=LocalStore(overlays) if overlays else None,
    )
    uris = sorted(str(p) for p in folder.iterdir())
    return {Path(o.uri).name: o for o in screener.screen(uris)}, engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'qc.db'}"
        return
    create, drop = request.getfixturevalue("pg_databases")
    url = create()
    yield url
    drop(url)


def test_bad_files_are_recorded_failures_and_the_batch_goes_on(db_url, tiny_checkpoint, batch_dir, tmp_path):
    outcomes, engine = _screen(db_url, tiny_checkpoint, batch_dir, overlays=tmp_path / "ov")
    for name, reason in REASONS.items():
        assert outcomes[name].status == "failed", name
        assert reason in outcomes[name].reason, (name, outcomes[name].reason)
    for name in ("coffee.jpg", "portrait_A000069.jpg"):
        o = outcomes[name]
        assert o.status == "screened" and o.verdict in ("pass", "review", "reject")
        assert Path(o.overlay).is_file()
        assert {r.aspect for r in o.rois} == {"16:9", "4:3", "1:1", "2:3"}
    with engine.connect() as c:
        failed = dict(c.execute(select(ImageRow.uri, ImageRow.failure_reason).where(ImageRow.status == "failed")).all())
        assert {Path(u).name for u in failed} == set(REASONS)
        assert c.scalar(select(func.count()).select_from(Screening)) == 2
        assert c.scalar(select(func.count()).select_from(CropRoi)) == 8
        assert c.scalar(select(func.count()).select_from(BlurRegion)) >= 2 * 9  # at least the grid
    engine.dispose()


def test_failures_carry_the_kind_of_their_error(tiny_checkpoint, batch_dir, tmp_path):
    outcomes, engine = _screen(f"sqlite:///{tmp_path / 'kinds.db'}", tiny_checkpoint, batch_dir)
    engine.dispose()
    kinds = {name: o.failure_kind for name, o in outcomes.items()}
    assert kinds == {
        "truncated.jpg": "decode",
        "notes.jpg": "decode",
        "empty.jpg": "decode",
        "bomb.png": "too_large",
        "coffee.jpg": None,
        "portrait_A000069.jpg": None,
    }
    assert outcomes["bomb.png"].to_dict()["failure_kind"] == "too_large"


def test_screening_twice_leaves_one_screening_per_image(db_url, tiny_checkpoint, batch_dir):
    _, engine = _screen(db_url, tiny_checkpoint, batch_dir)
    engine.dispose()
    _, engine = _screen(db_url, tiny_checkpoint, batch_dir)
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(Screening)) == 2
        assert c.scalar(select(func.count()).select_from(CropRoi)) == 8
    engine.dispose()


def test_a_batch_analysed_on_several_threads_gets_the_verdicts_of_one_thread(tiny_checkpoint, tmp_path):
    """The images of a batch are analysed ``analysis_threads`` at a time: the same regions,
    verdicts and crops as one at a time, and each image's ``analyse`` timing is its share
    of the batch's analysis (as ``detect`` is of the forward pass)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("coffee.jpg", "portrait_A000069.jpg", "astronaut.jpg", "chelsea.jpg"):
        shutil.copy(SAMPLES / name, folder / name)
    runs = {}
    for threads in (1, 3):
        outcomes, engine = _screen(
            f"sqlite:///{tmp_path / f't{threads}.db'}", tiny_checkpoint, folder, analysis_threads=threads
        )
        engine.dispose()
        runs[threads] = outcomes
    for name, one in runs[1].items():
        many = runs[3][name]
        assert (many.verdict, many.score, many.reasons) == (one.verdict, one.score, one.reasons), name
        assert [r.bbox for r in many.rois] == [r.bbox for r in one.rois], name
        assert [(r.kind, r.bbox, r.coverage, r.verdict) for r in many.regions] == [
            (r.kind, r.bbox, r.coverage, r.verdict) for r in one.regions
        ], name
    shares = {o.timings["analyse"] for o in runs[3].values()}
    assert len(shares) == 1 and shares.pop() > 0


def test_qc_batch_size_sets_the_images_per_forward_pass(tiny_checkpoint, monkeypatch):
    settings = Settings(_env_file=None, model_path=tiny_checkpoint, device="cpu", precision="fp32", batch_size=3)
    detector = load_detector(settings)
    assert detector.config.batch_size == 3 and detector.dtype is None
    sizes = []
    forward = detector._forward
    monkeypatch.setattr(detector, "_forward", lambda batch: (sizes.append(len(batch)), forward(batch))[1])
    detector.predict([np.zeros((64, 64, 3), np.uint8)] * 7)
    assert sizes == [3, 3, 1]


def test_the_checkpoints_frame_threshold_turns_on_the_whole_frame_rule(tmp_path):
    """With no pixel ever over 1.0 the area rules stay quiet; a frame threshold of almost
    zero then reviews every textured image, and the median lands in the stored scores."""
    torch.manual_seed(0)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES / "coffee.jpg", images / "coffee.jpg")
    verdicts = {}
    for name, thresholds in (("off", {"pixel": 1.0}), ("on", {"pixel": 1.0, "frame": 1e-6})):
        ckpt = save_checkpoint(tmp_path / f"{name}.safetensors", BlurDetector(TINY).eval(), thresholds=thresholds)
        outcomes, engine = _screen(f"sqlite:///{tmp_path / name}.db", tmp_path / f"{name}.safetensors", images)
        assert ckpt.thresholds == thresholds
        verdicts[name] = outcomes["coffee.jpg"].verdict
        with engine.connect() as c:
            scores = c.scalar(select(Screening.scores))
        engine.dispose()
        assert scores["frame_median"] > 1e-6
        assert any(r.startswith("whole frame") for r in scores["reasons"]) == (name == "on")
    assert verdicts == {"off": "pass", "on": "review"}


runner = CliRunner()


def test_qc_screen_command(tiny_checkpoint, batch_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QC_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    from qc_worker.config import get_settings

    get_settings.cache_clear()
    res = runner.invoke(
        app,
        [
            "screen",
            str(batch_dir),
            "--model",
            str(tiny_checkpoint),
            "--format",
            "json",
            "--out",
            str(tmp_path / "ov"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout[res.stdout.index("[") : res.stdout.rindex("]") + 1])
    assert len(rows) == 6 and sum(r["status"] == "failed" for r in rows) == 4
    res = runner.invoke(
        app,
        [
            "screen",
            str(batch_dir / "coffee.jpg"),
            "--model",
            str(tiny_checkpoint),
            "--format",
            "csv",
        ],
    )
    assert res.exit_code == 0 and res.stdout.startswith("file,status,verdict,score,reason,worst_kind")
    assert runner.invoke(app, ["screen", str(tmp_path / "missing")]).exit_code == 2
    (tmp_path / "none").mkdir()
    res = runner.invoke(app, ["screen", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no images found" in res.output
    res = runner.invoke(app, ["screen", str(batch_dir), "--model", str(tmp_path / "nope.safetensors")])
    assert res.exit_code == 2 and "cannot load the detector" in res.output
    get_settings.cache_clear()


def test_qc_screen_report_writes_the_runs_html_page(tiny_checkpoint, batch_dir, tmp_path, monkeypatch):
    import re

    monkeypatch.setenv("QC_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    from qc_worker.config import get_settings

    get_settings.cache_clear()
    page = tmp_path / "reports" / "run.html"
    args = ["screen", str(batch_dir), "--model", str(tiny_checkpoint), "--format", "json", "--report", str(page)]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "ov")])
    get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("[") : res.stdout.rindex("]") + 1])  # stdout stays JSON
    html = page.read_text(encoding="utf-8")
    assert 'data-images="6"' in html and "qc screen" in html
    assert re.search(r'class="pill failed">4 failed', html), html[:2000]
    for name in ("coffee.jpg", "portrait_A000069.jpg", "truncated.jpg", "bomb.png"):
        assert name in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert html.count("data:image/jpeg;base64,") >= 2  # the two screened images' overlays
    res = runner.invoke(app, ["screen", str(batch_dir), "--report", str(tmp_path)])
    assert res.exit_code == 2 and res.output.strip().endswith("is a folder; give the HTML file to write")
    get_settings.cache_clear()


def test_qc_screen_refuses_an_out_that_is_a_file_before_loading_anything(batch_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QC_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    from qc_worker.config import get_settings

    get_settings.cache_clear()
    taken = tmp_path / "taken.jpg"
    taken.write_bytes(b"x")
    res = runner.invoke(app, ["screen", str(batch_dir), "--model", str(tmp_path / "no-model"), "--out", str(taken)])
    get_settings.cache_clear()
    assert res.exit_code == 2 and "is a file" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "never.db").exists()  # nothing was loaded or created
