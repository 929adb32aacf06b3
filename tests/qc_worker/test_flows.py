"""The job flows without Celery, on SQLite: a poison image is failed alone after
CRASH_LIMIT cut-short tries, and the rest of its chunk is screened."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from qc_worker import flows, jobs
from qc_worker.config import Settings
from qc_worker.db.engine import make_engine, make_sessionmaker
from qc_worker.db.migrate import upgrade
from qc_worker.db.models import JobItem, JobKind, JobStatus
from qc_worker.storage import LocalStore, RoutingStore, StorageError
from tests.workers import tiny_checkpoint

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"


class PoisonStore(RoutingStore):
    """Local files, except that reading ``poison.jpg`` raises what no handler expects (as a
    library bug on a hostile file would)."""

    def read(self, uri: str, max_bytes: int | None = None) -> bytes:
        if uri.endswith("poison.jpg"):
            raise TypeError("a decoder bug")
        return super().read(uri, max_bytes)


def _no_s3():
    raise StorageError("no S3 in this test")


@pytest.fixture
def ctx(tmp_path) -> flows.WorkerContext:
    url = f"sqlite:///{tmp_path / 'qc.db'}"
    upgrade(url)
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    settings = Settings(
        _env_file=None,
        database_url=url,
        model_path=model,
        device="cpu",
        local_root=tmp_path,
        write_overlays=False,
        batch_size=8,
    )
    return flows.WorkerContext(
        settings,
        make_sessionmaker(make_engine(url)),
        PoisonStore(LocalStore(tmp_path, confine=True), _no_s3),
    )


def test_a_poison_image_fails_alone_after_the_crash_limit(ctx, tmp_path):
    names = ["coffee.jpg", "chelsea.jpg", "poison.jpg", "rocket.jpg", "astronaut.jpg"]
    for name in names:
        shutil.copy(SAMPLES / ("coffee.jpg" if name == "poison.jpg" else name), tmp_path / name)
    with ctx.sessions.begin() as s:
        job_id = jobs.create_job(s, JobKind.VENDOR, {"vendor": "v"}).id
        jobs.add_items(s, job_id, [{"uri": str(tmp_path / n)} for n in names])
        jobs.mark_planned(s, job_id)
        item_ids = jobs.pending_item_ids(s, job_id)
    runs = 0
    while True:  # what the task does: run, and on an unexpected error run again later
        runs += 1
        try:
            status = flows.run_screen_chunk(ctx, job_id, item_ids)
            break
        except TypeError:
            assert runs <= flows.CRASH_LIMIT
    assert runs == flows.CRASH_LIMIT + 1
    assert status == JobStatus.PARTIALLY_FAILED
    with ctx.sessions() as s:
        items = {Path(i.uri).name: i for i in s.scalars(select(JobItem).where(JobItem.job_id == job_id))}
    assert items["poison.jpg"].status == "failed" and "cut short 3 times" in items["poison.jpg"].reason
    assert all(items[n].status == "screened" for n in names if n != "poison.jpg")


def test_a_transient_error_does_not_count_against_the_images(ctx, tmp_path):
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "a.jpg")
    with ctx.sessions.begin() as s:
        job_id = jobs.create_job(s, JobKind.VENDOR, {}).id
        jobs.add_items(s, job_id, [{"uri": str(tmp_path / "a.jpg")}, {"uri": "s3://bucket/b.jpg"}])
        jobs.mark_planned(s, job_id)
        item_ids = jobs.pending_item_ids(s, job_id)

    from qc_worker.storage import TransientStorageError

    def down():
        raise TransientStorageError("endpoint down")

    ctx.store = PoisonStore(LocalStore(tmp_path, confine=True), down)
    ctx.screener.store = ctx.store
    with pytest.raises(TransientStorageError):
        flows.run_screen_chunk(ctx, job_id, item_ids)
    with ctx.sessions() as s:
        assert jobs.item_attempts(s, item_ids) == dict.fromkeys(item_ids, 0)
