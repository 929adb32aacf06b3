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


def test_jobs_are_created_and_those_the_broker_refused_are_marked_failed(ctx):
    from qc_worker.catalog import parse_catalog
    from qc_worker.db.models import Job, Title
    from qc_worker.vocabulary import TaskName

    rows, problems = parse_catalog(b"title_id,name,video_uri\nt1,One,a.mp4\nt2,Two,b.mp4\n")
    assert not problems
    title_jobs = flows.create_title_jobs(ctx.sessions, rows)
    vendor_job = flows.create_submission_job(ctx.sessions, ["x.jpg", "s3://b/p/"], "acme")
    sent = []

    def send(task, job_id):
        if len(sent) == 2:
            raise ConnectionError("broker down")
        sent.append((job_id, task))

    to_send = [(j, TaskName.EXTRACT_FRAMES) for j in title_jobs] + [(vendor_job, TaskName.SCREEN_SUBMISSION)]
    with pytest.raises(flows.QueueUnreachable, match="broker down") as caught:
        flows.queue_jobs(ctx.sessions, to_send, send)
    assert caught.value.failed == 1 and sent == to_send[:2]
    with ctx.sessions() as s:
        by_id = {j.id: j for j in s.scalars(select(Job))}
        assert {t.external_id for t in s.scalars(select(Title))} == {"t1", "t2"}
    assert [by_id[j].kind for j in title_jobs] == [JobKind.FRAMES] * 2
    assert by_id[title_jobs[0]].payload["video_uri"] == "a.mp4"
    assert by_id[vendor_job].payload["uris"] == ["x.jpg", "s3://b/p/"] and by_id[vendor_job].payload["vendor"] == "acme"
    assert [by_id[j].status for j in title_jobs] == [JobStatus.QUEUED] * 2
    assert by_id[vendor_job].status == JobStatus.FAILED
    assert "could not queue the job: ConnectionError: broker down" in by_id[vendor_job].error
