"""Load: thousands of images across many jobs on several worker processes. Every job ends
done, each image has exactly one screening (none written twice: with no fault, no chunk
runs twice), and the memory of every pool process stays flat.

CI size: 2 000 images in 20 vendor jobs, one `qc worker --concurrency 2` (two pool
processes on the two CI cores). ``--soak`` (``pytest tests/reliability --soak``): 20 000
images (``--soak-images``), 2 workers x 2 pool processes, overlays written as in
production, and the figures go to BENCHMARKS.md.

Memory: every 0.5 s the test reads VmRSS of each pool process (``/proc/<pid>/status``;
the children of each worker's main process) together with the progress of the run. The
bound (``GROWTH_BOUND_MB``) is on growth between 25 % and 100 % of progress, after the
first images of each size have warmed the allocator and torch's per-shape buffers: a
process that kept even a small share of what it handled (a decoded image, a probability
map: 50-200 KB an image) would grow by tens of MB per thousand images.
"""

from __future__ import annotations

import math
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qc_worker.db.models import JobStatus
from tests.reliability.harness import (
    RssSampler,
    assert_each_screened_once,
    enqueue_vendor,
    screened_count,
    upload_images,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS = 20
#: Growth (MB) of a pool process's RSS between 25 % and 100 % of the run that still counts
#: as flat. Measured at CI size: +4 to +12 MB (the allocator's ups and downs; peaks ~10 MB
#: above the end). Each of the two processes screens ~750 images after 25 %, so the bound
#: fails a process that keeps ~55 KB an image (one decoded 128 px image is 49 KB, its two
#: float maps 128 KB); the soak, ten times longer, sees leaks ten times smaller.
GROWTH_BOUND_MB = 40


#: Image sizes (width, height), one per job in turn: a job's images share a size, as a
#: video's thumbnails do, so the detector batches them. A few sizes only: each new input
#: shape costs torch/oneDNN some memory once (measured: ~100 MB over 20 shapes, then
#: flat), and all of them are met in the first fifth of the run, before memory is judged.
SIZES = ((128, 96), (96, 160), (160, 128), (112, 112))


def _size(job: int) -> tuple[int, int]:
    return SIZES[job % len(SIZES)]


def test_many_jobs_on_several_processes_each_image_once_and_flat_memory(rel_env, s3_endpoint, request):
    soak = request.config.getoption("soak")
    total = request.config.getoption("soak_images") if soak else 2000
    workers, concurrency = (2, 2) if soak else (1, 2)
    per_job = total // JOBS
    env = rel_env
    settings = {
        "QC_SCREEN_CHUNK_SIZE": "32",
        "QC_BATCH_SIZE": "8",
        "QC_WRITE_OVERLAYS": "true" if soak else "false",
    }

    t0 = time.monotonic()
    client = s3_endpoint.client()
    prefixes = []
    for job in range(JOBS):
        prefix = f"load/job-{job:03d}/"
        upload_images(client, env.bucket, prefix, per_job, seed=job, start=job * per_job, size=_size(job))
        prefixes.append(f"s3://{env.bucket}/{prefix}")
    upload_s = time.monotonic() - t0

    procs = [env.start_worker("--concurrency", str(concurrency), name=f"load{i}", **settings) for i in range(workers)]
    try:
        for w in procs:
            w.wait_ready()
        with RssSampler([w.proc.pid for w in procs], lambda: screened_count(env) / total) as rss:
            t1 = time.monotonic()
            with ThreadPoolExecutor(4) as pool:  # jobs arrive while the workers run
                job_ids = list(pool.map(lambda uri: enqueue_vendor(env, "load", uri), prefixes))
            jobs = env.wait_jobs(job_ids, timeout=3600 if soak else 480, worker=procs[0])
            run_s = time.monotonic() - t1
    finally:
        for w in procs:
            w.stop()
    assert all(j.status == JobStatus.DONE for j in jobs), [(j.id, str(j.status)) for j in jobs]
    assert sum(j.items_done for j in jobs) == total
    got = assert_each_screened_once(env, total)
    assert got.rescreened == 0, got

    rows, growth = _memory_table(rss)
    rate = total / run_s
    print(
        f"\n{total} images, {JOBS} jobs, {workers} worker(s) x {concurrency}: {run_s:.1f} s "
        f"({rate:.1f} images/s); upload {upload_s:.1f} s\n" + "\n".join(rows)
    )
    if soak:
        _write_benchmark(total, workers, concurrency, run_s, rate, rows)
    assert growth, "no pool process lived from 25 % to the end of the run"
    assert max(growth.values()) < GROWTH_BOUND_MB, growth


def _memory_table(rss: RssSampler) -> tuple[list[str], dict[int, float]]:
    """A Markdown table of RSS per pool process (start, at 25 %, end, peak) and the growth
    from 25 % to the end of each process that lived through both."""
    rows = [
        "| pool process | samples | RSS start (MB) | at 25 % (MB) | end (MB) | peak (MB) | growth 25 %-100 % (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    growth: dict[int, float] = {}
    for pid, samples in sorted(rss.per_process().items()):
        mb = [kb / 1024 for _, _, kb in samples]
        progress = [p for _, p, _ in samples if math.isfinite(p)]  # NaN: a progress query failed
        at25 = rss.rss_at(pid, 0.25) / 1024
        lived = bool(progress) and progress[0] <= 0.25 and progress[-1] >= 0.99
        if lived:
            growth[pid] = mb[-1] - at25
        rows.append(
            f"| {pid} | {len(samples)} | {mb[0]:.0f} | {at25:.0f} | {mb[-1]:.0f} | {max(mb):.0f} | {growth[pid]:+.1f} |"
            if lived
            else f"| {pid} | {len(samples)} | {mb[0]:.0f} | - | {mb[-1]:.0f} | {max(mb):.0f} | (not through) |"
        )
    return rows, growth


def _write_benchmark(total: int, workers: int, concurrency: int, run_s: float, rate: float, rows: list[str]) -> None:
    from bench.report import write_section

    body = (
        f"{total} vendor images ({JOBS} jobs, 96-160 px, one size per job) screened by {workers} `qc worker` "
        f"processes x `--concurrency {concurrency}` (tiny random-init model, one torch thread per process, "
        f"overlays written, chunks of 32, batches of 8) against real Redis, PostgreSQL and moto's S3 server: "
        f"**{run_s:.0f} s, {rate:.1f} images/s**; every job done, each image screened exactly once, none "
        f"twice.\n\nMemory of each pool process (VmRSS, sampled every 0.5 s):\n\n" + "\n".join(rows) + "\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores."
    )
    write_section(
        "tests/reliability/test_queue_load.py",
        "Queue soak: memory and throughput",
        f"`.venv/bin/python -m pytest tests/reliability/test_queue_load.py --soak --soak-images {total} -s`",
        body,
    )
