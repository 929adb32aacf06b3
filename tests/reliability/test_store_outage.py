"""The S3 endpoint down for a while, then back: tasks retry with back-off, then succeed;
a key that does not exist fails only its own item, with its reason.

The test runs its own moto S3 server (its objects live in the test process, so they
survive a stop and a start on the same port). It goes down twice: right after the job is
queued, before the worker lists the submission's prefix (the listing fails), and again
while chunks are screening (reads of images and writes of overlays fail). boto3 retries each request a little
(``QC_S3_MAX_ATTEMPTS``); what still fails is a ``TransientStorageError`` and the task
retries with capped exponential back-off. Meanwhile nothing is recorded as failed for a
store that is down: only ``missing.jpg`` ends failed, for ``NoSuchKey``.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from qc_worker.db.models import JobItem, JobStatus
from tests.conftest import S3Endpoint
from tests.reliability.conftest import fast_screening
from tests.reliability.harness import (
    QUICK_REDELIVERY,
    assert_each_screened_once,
    enqueue_vendor,
    progress_counts,
    upload_images,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 96
OUTAGE_S = 4
SETTINGS = {
    **QUICK_REDELIVERY,
    "QC_SCREEN_CHUNK_SIZE": "16",
    "QC_BATCH_SIZE": "4",
    "QC_S3_MAX_ATTEMPTS": "2",
    "QC_RETRY_MAX": "12",
    "QC_RETRY_BACKOFF_MAX_S": "2",
}


@pytest.fixture
def own_s3():
    endpoint = S3Endpoint()
    endpoint.start()
    yield endpoint
    endpoint.stop()


def test_store_outage_retries_then_succeeds_and_a_missing_key_fails_alone(make_env, own_s3, tiny_model):
    bucket = "qc-outage"
    own_s3.client().create_bucket(Bucket=bucket)
    env = make_env(own_s3.url, bucket)
    fast_screening(env, tiny_model)
    upload_images(own_s3.client(), bucket, "art/", IMAGES, size=(128, 128))
    missing = f"s3://{bucket}/incoming/missing.jpg"
    job = enqueue_vendor(env, "acme", f"s3://{bucket}/art/", missing)
    own_s3.stop()  # down before any worker has listed the prefix
    down_at = time.monotonic()
    with env.worker(**SETTINGS) as worker:
        wait_for(
            lambda: "qc.screen_submission: transient failure" in worker.log(),
            60,
            "the listing to fail",
            on_timeout=worker.log,
        )
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        own_s3.start()
        wait_for(lambda: progress_counts(env)[1] >= 16, 120, "screening to start", on_timeout=worker.log)
        own_s3.stop()  # down again, mid-job
        during = progress_counts(env)
        time.sleep(OUTAGE_S)
        own_s3.start()
        [done] = env.wait_jobs([job], timeout=180, worker=worker)
        log = worker.log()
    assert done.status == JobStatus.PARTIALLY_FAILED, log[-3000:]
    assert (done.items_total, done.items_done, done.items_failed) == (IMAGES + 1, IMAGES, 1)
    with env.sessions()() as s:
        failed = s.execute(select(JobItem.uri, JobItem.reason).where(JobItem.status == "failed")).all()
    assert [uri for uri, _ in failed] == [missing] and "NoSuchKey" in failed[0][1], failed
    retries = log.count("transient failure")
    assert "qc.screen_chunk: transient failure" in log, log[-3000:]  # reads and overlay writes
    assert "gave up" not in log
    assert during[1] < IMAGES  # the second outage did come mid-job
    got = assert_each_screened_once(env, IMAGES, failed=1)
    print(
        f"\ntwo outages of {OUTAGE_S}+ s (the second at {during[1]}/{IMAGES} items); {retries} task retries; "
        f"{got.rescreened} screened again; {missing} failed: {failed[0][1]}"
    )
