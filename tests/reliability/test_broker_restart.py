"""Redis restarted in the middle of a job: the job completes and nothing queued is lost.

The test owns its Redis (`redis-server` on a free port, append-only file fsynced on every
write, in a temporary folder), stops it while a job's chunks are queued and one runs,
and starts it again on the same port and folder. What this shows:

* the queued chunk messages are in the append-only file, so they are there again after the
  restart, and the worker (which retries its broker connection for ever) consumes them;
* the chunk running at the stop is cancelled by the worker on the lost connection
  (``worker_cancel_long_running_tasks_on_connection_loss``): its message is still in the
  "unacked" hash, also in the file, and comes back after the visibility timeout (60 s
  here), at the worker's next restore sweep (kombu scans every 10 x 10 s), so the job ends
  some 100 s after the restart; the rerun screens only the items left pending.

Production Redis needs the append-only file for this (docs/deploy.md): without it, a
restart empties the queues and the jobs whose messages were waiting never end.
"""

from __future__ import annotations

import time

import pytest

from qc_worker.db.models import JobStatus
from tests.conftest import free_port
from tests.reliability.conftest import fast_screening
from tests.reliability.harness import (
    QUICK_REDELIVERY,
    RedisServer,
    assert_each_screened_once,
    enqueue_vendor,
    progress_counts,
    upload_images,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 160
SETTINGS = {**QUICK_REDELIVERY, "QC_SCREEN_CHUNK_SIZE": "16", "QC_BATCH_SIZE": "4"}


def _queued(client, prefix: str) -> tuple[int, int]:
    """(messages waiting on the screen queue, messages delivered and not acknowledged)."""
    return client.llen(f"{prefix}screen"), client.hlen(f"{prefix}unacked")


def test_redis_restart_mid_job_loses_nothing(make_env, s3_endpoint, s3_bucket, tiny_model, tmp_path):
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    try:
        env = make_env(s3_endpoint.url, s3_bucket, redis_url=server.url)
        fast_screening(env, tiny_model)
        upload_images(s3_endpoint.client(), env.bucket, "art/", IMAGES, size=(112, 112))
        job = enqueue_vendor(env, "acme", f"s3://{env.bucket}/art/")
        with env.worker(**SETTINGS) as worker:
            wait_for(lambda: progress_counts(env)[1] >= 16, 120, "the first chunk", on_timeout=worker.log)
            client = server.client()
            waiting, unacked = _queued(client, env.redis_prefix)
            client.close()
            stopped_at = time.monotonic()
            server.stop()
            at_stop = progress_counts(env)
            time.sleep(3)
            server.start()
            client = server.client()
            after_restart = _queued(client, env.redis_prefix)
            client.close()
            restarted_at = time.monotonic()
            [done] = env.wait_jobs([job], timeout=240, worker=worker)
            finished_s = time.monotonic() - restarted_at
            log = worker.log()
        assert done.status == JobStatus.DONE, log[-3000:]
        assert (server.folder / "appendonlydir").is_dir()
    finally:
        server.stop()
    # Work was still queued when Redis went away, and it was all there when it came back
    # (the worker may have taken one more message in between: then it is in "unacked").
    assert waiting >= 1, (waiting, unacked)
    assert sum(after_restart) >= waiting + unacked - 1, (waiting, unacked, after_restart)
    assert at_stop[1] < IMAGES
    assert "Connection to broker lost" in log, log[-3000:]
    got = assert_each_screened_once(env, IMAGES)
    print(
        f"\nRedis stopped at {at_stop[1]}/{IMAGES} items ({waiting} chunks waiting, {unacked} unacked), "
        f"down {restarted_at - stopped_at:.1f} s; job done {finished_s:.1f} s after the restart; "
        f"{got.rescreened} screened again"
    )
