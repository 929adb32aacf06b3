"""A worker killed with SIGKILL in the middle of a batch loses no work and duplicates none.

Two ways to die:

* only a pool process (the one running the chunk) is killed: the worker's main process
  sees it go (``WorkerLostError``) and, with ``task_reject_on_worker_lost``, puts the
  message back on the queue at once; a new pool process (which loads the model first)
  picks it up;
* the whole worker (main process and pool) is killed: nobody is left to put the message
  back. It stays in kombu's "unacked" hash in Redis, indexed by delivery time, and a
  worker's restore sweep (at its start, then periodically) moves it back to the queue once
  it is older than the visibility timeout. So the replacement worker is started as soon as
  the visibility timeout (60 s, the least Settings allows) has passed since the delivery.

Either way the chunk runs again and screens only its items still pending; images whose
screenings were written before the kill but whose items were not yet recorded are screened
again and their screening row is updated in place, never duplicated.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from qc_worker.db.models import JobStatus
from tests.reliability.harness import (
    QUICK_REDELIVERY,
    assert_each_screened_once,
    children,
    enqueue_vendor,
    upload_images,
    wait_for,
    wait_mid_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 96
#: Small batches so the kill lands between an image's screening and its batch's record;
#: one chunk holds the whole job, so the kill always hits the chunk that holds work.
SETTINGS = {**QUICK_REDELIVERY, "QC_SCREEN_CHUNK_SIZE": "48", "QC_BATCH_SIZE": "4"}


def test_killed_pool_process_is_requeued_at_once(rel_env, s3_endpoint):
    env = rel_env
    upload_images(s3_endpoint.client(), env.bucket, "art/", IMAGES, size=(128, 96))
    job = enqueue_vendor(env, "acme", f"s3://{env.bucket}/art/")
    t0 = time.monotonic()
    with env.worker(**SETTINGS) as worker:
        [child] = children(worker.proc.pid)
        written, recorded = wait_mid_batch(env, min_recorded=4, worker=worker)
        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        [done] = env.wait_jobs([job], timeout=120, worker=worker)
        recovered_s = time.monotonic() - killed_at
        new_children = children(worker.proc.pid)
        log = worker.log()
    assert "SIGKILL" in log and "WorkerLostError" in log, log[-3000:]
    # The replacement process loads the model before it reports up; Celery's default
    # allowance (4 s) killed it again and again on a busy machine (celery_app.py).
    assert "Timed out waiting for UP" not in log, log[-3000:]
    assert child not in new_children and len(new_children) == 1
    assert done.status == JobStatus.DONE, log[-3000:]
    got = assert_each_screened_once(env, IMAGES)
    # The images whose screenings were written before the kill, but whose batch was not
    # recorded, were screened again: the same rows, updated.
    assert got.rescreened >= written - recorded, got
    # Requeued at once: far sooner than the visibility timeout would have allowed.
    assert recovered_s < 45, recovered_s
    print(
        f"\npool process killed at {written} screenings / {recorded} items recorded; job done "
        f"{recovered_s:.1f} s later ({time.monotonic() - t0:.1f} s in all); {got.rescreened} screened again"
    )


def test_worker_killed_whole_comes_back_after_the_visibility_timeout(rel_env, s3_endpoint):
    env = rel_env
    upload_images(s3_endpoint.client(), env.bucket, "art/", IMAGES, size=(128, 96))
    job = enqueue_vendor(env, "acme", f"s3://{env.bucket}/art/")
    redis = __import__("redis").Redis.from_url(env.redis_url)
    unacked_index = f"{env.redis_prefix}unacked_index"
    try:
        with env.worker(**SETTINGS) as worker:
            written, recorded = wait_mid_batch(env, min_recorded=4, worker=worker)
            worker.kill()  # SIGKILL to the process group: main process and pool at once
            first_log = worker.log()
        killed_at = time.time()
        # The chunk's message is not lost: it waits, unacknowledged, in Redis.
        delivered = redis.zrange(unacked_index, 0, -1, withscores=True)
        assert delivered, "the killed worker's message is not in the unacked index"
        visible_at = max(score for _, score in delivered) + int(QUICK_REDELIVERY["QC_VISIBILITY_TIMEOUT_S"])
        time.sleep(max(0.0, visible_at - time.time()) + 0.5)
        waited_s = time.time() - killed_at
        with env.worker(**SETTINGS) as worker:
            [done] = env.wait_jobs([job], timeout=120, worker=worker)
            wait_for(lambda: redis.zcard(unacked_index) == 0, 10, "the unacked index to empty")
            second_log = worker.log()
        assert done.status == JobStatus.DONE, second_log[-3000:]
    finally:
        redis.close()
    assert "ready." in first_log
    got = assert_each_screened_once(env, IMAGES)
    assert got.rescreened >= written - recorded, got
    print(
        f"\nworker killed at {written} screenings / {recorded} items recorded; waited {waited_s:.1f} s "
        f"for the visibility timeout; {got.rescreened} screened again"
    )
