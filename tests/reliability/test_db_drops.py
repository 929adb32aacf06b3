"""PostgreSQL connections dropped during writes: tasks retry and succeed, every item is
screened exactly once, and no half-written screening is ever visible.

While a job runs on two pool processes, the test keeps terminating every backend of the
job's database (``pg_terminate_backend``), a few times a second, except its own reader's.
A worker's idle pooled connection that was terminated is replaced at checkout
(``pool_pre_ping``); one terminated mid-transaction fails that transaction, which rolls
back, and the task retries with back-off (``OperationalError`` is transient, and does
not count against the images as a crash would). Meanwhile
a reader polls, in one statement (one snapshot), every screening with its region and crop
counts: a screening is written with its 3 x 3 grid cells (always stored) and one crop per
aspect in one transaction, so the reader must never see one without them.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from qc_worker.db.engine import make_engine, make_sessionmaker
from qc_worker.db.models import Job, JobStatus
from qc_worker.jobs import FINAL
from tests.reliability.harness import (
    GRID_CELLS,
    QUICK_REDELIVERY,
    ROI_ASPECTS,
    assert_each_screened_once,
    enqueue_vendor,
    upload_images,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 120
READER = "qc-reliability-reader"
SETTINGS = {
    **QUICK_REDELIVERY,
    "QC_SCREEN_CHUNK_SIZE": "8",
    "QC_BATCH_SIZE": "4",
    # Quick retries, and enough of them that a chunk unlucky several times still succeeds.
    "QC_RETRY_MAX": "30",
    "QC_RETRY_BACKOFF_MAX_S": "1",
}

SNAPSHOT = text("""
    SELECT s.id,
           (SELECT count(*) FROM blur_regions r WHERE r.screening_id = s.id) AS regions,
           (SELECT count(*) FROM blur_regions r WHERE r.screening_id = s.id AND r.kind = 'grid') AS grid,
           (SELECT count(*) FROM crop_rois c WHERE c.screening_id = s.id) AS rois
    FROM screenings s
""")
TERMINATE = text("""
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> :reader
""")


class Reader(threading.Thread):
    """Polls SNAPSHOT until stopped; keeps every screening seen without all its rows."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, poolclass=NullPool)
        self.stop = threading.Event()
        self.polls = 0
        self.most_seen = 0
        self.partial: list[tuple] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.engine.connect() as conn:
                while not self.stop.is_set():
                    rows = conn.execute(SNAPSHOT).all()
                    conn.rollback()
                    self.polls += 1
                    self.most_seen = max(self.most_seen, len(rows))
                    self.partial += [
                        r for r in rows if r.regions < GRID_CELLS or r.grid != GRID_CELLS or r.rois != ROI_ASPECTS
                    ]
                    time.sleep(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.engine.dispose()


class Terminator(threading.Thread):
    """Terminates every other backend of the database every 0.2-0.6 s until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.stop = threading.Event()
        self.rounds = 0
        self.terminated = 0

    def run(self) -> None:
        rng = random.Random(3)
        with self.engine.connect() as conn:
            while not self.stop.wait(rng.uniform(0.2, 0.6)):
                self.terminated += conn.execute(TERMINATE, {"reader": READER}).scalar_one()
                self.rounds += 1
        self.engine.dispose()


def _wait_job(url: str, job_id: int, timeout: float, worker) -> Job:
    sessions = make_sessionmaker(make_engine(url, poolclass=NullPool))
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as s:
            job = s.get(Job, job_id)
            s.expunge_all()
        if job.status in FINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} {job.status} after {timeout} s\n{worker.log()[-4000:]}")
        time.sleep(0.3)


def test_dropped_connections_retry_and_never_show_half_a_screening(rel_env, s3_endpoint):
    env = rel_env
    upload_images(s3_endpoint.client(), env.bucket, "art/", IMAGES, size=(144, 96))
    job = enqueue_vendor(env, "acme", f"s3://{env.bucket}/art/")
    # As the postgres user, on the job's own database (terminating needs the privilege).
    admin_url = make_url(env.db_url).set(username="postgres").render_as_string(hide_password=False)
    # The test's own connections say who they are, and the terminator spares them.
    spared_url = (
        make_url(env.db_url).update_query_dict({"application_name": READER}).render_as_string(hide_password=False)
    )
    reader, terminator = Reader(spared_url), Terminator(admin_url)
    t0 = time.monotonic()
    with env.worker("--concurrency", "2", **SETTINGS) as worker:
        reader.start()
        terminator.start()
        try:
            done = _wait_job(spared_url, job, 240, worker)
            polls = reader.polls  # let the reader look once more, after the last write
            wait_for(lambda: reader.polls >= polls + 2 or not reader.is_alive(), 30, "a last snapshot")
        finally:
            terminator.stop.set()
            terminator.join(10)
            reader.stop.set()
            reader.join(10)
        log = worker.log()
    elapsed = time.monotonic() - t0
    assert reader.error is None, reader.error
    assert done.status == JobStatus.DONE, log[-3000:]
    retries = log.count("transient failure")
    assert terminator.terminated > 0 and retries > 0, (terminator.terminated, log[-3000:])
    assert "gave up" not in log
    assert reader.partial == [], reader.partial[:10]
    assert reader.polls > 20 and reader.most_seen == IMAGES, (reader.polls, reader.most_seen)
    got = assert_each_screened_once(env, IMAGES)
    # A dropped connection is not the images' fault: it must not count as a crash against
    # them (flows.CRASH_LIMIT). Only when even the write that takes the count back is hit
    # does a chunk run again item by item; the job still ends done.
    one_by_one = log.count("screening its")
    print(
        f"\n{terminator.terminated} backends terminated in {terminator.rounds} rounds over {elapsed:.1f} s; "
        f"{retries} task retries; reader polled {reader.polls} snapshots, none partial; "
        f"{got.rescreened} screened again; {one_by_one} chunk runs item by item"
    )
