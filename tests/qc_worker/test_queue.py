"""The job queue end to end: real Redis, PostgreSQL, moto's S3 server and `qc worker` processes.

What the issue asks, each as a test: a title's video is sampled, uploaded, screened and the
job ends done with the blurred segment rejected and the sharp ones passed; a vendor job with
a corrupt file ends partially failed with the reason recorded; a rescan after a new model
version re-screens every image exactly once (and yields to other queues); the same job run
twice, or its message delivered twice, leaves no duplicate rows.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from sqlalchemy import func, select

from qc_worker.celery_app import make_celery
from qc_worker.db.models import Image, Job, JobItem, JobStatus, ModelVersion, Screening
from tests.conftest import free_port
from tests.qc_worker.videos import PORTRAITS, SAMPLES, make_title_video, segment_kind
from tests.workers import QueueEnv, job_ids, tiny_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    """One scrape of a worker's /metrics: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _counts(env: QueueEnv) -> dict[str, int]:
    with env.sessions()() as s:
        return {
            "images": s.scalar(select(func.count()).select_from(Image)),
            "screenings": s.scalar(select(func.count()).select_from(Screening)),
            "distinct_screenings": s.scalar(
                select(func.count()).select_from(
                    select(Screening.image_id, Screening.model_version_id).distinct().subquery()
                )
            ),
        }


def test_title_job_samples_uploads_and_screens_the_video(queue_env: QueueEnv, s3_endpoint, tmp_path):
    env = queue_env
    video = tmp_path / "title.mp4"
    spans = make_title_video(video)
    s3 = s3_endpoint.client()
    s3.upload_file(str(video), env.bucket, "videos/t-100.mp4")
    catalog = env.root / "catalog.csv"
    catalog.write_text(
        f"title_id,name,video_uri\nt-100,A Test Title,s3://{env.bucket}/videos/t-100.mp4\nt-bad,only two fields\n"
    )
    enqueued = env.qc("enqueue", "titles", str(catalog))
    assert "skipped" in enqueued.stderr and "line 3" in enqueued.stderr
    [job_id] = job_ids(enqueued.stdout)
    # The same job's message delivered a second time (as Redis does after a lost worker).
    celery = make_celery(env.settings())
    celery.send_task("qc.extract_frames", args=[job_id])
    celery.close()

    with env.worker() as worker:
        [job] = env.wait_jobs([job_id], worker=worker)
        assert job.status == JobStatus.DONE, (job.error, worker.log()[-3000:])
        first = _counts(env)
        # Running the same title again: a new job, the same thumbnails, no new rows.
        [job2_id] = job_ids(env.qc("enqueue", "titles", str(catalog)).stdout)
        [job2] = env.wait_jobs([job2_id], worker=worker)
        assert job2.status == JobStatus.DONE
        assert _counts(env) == first
    assert first["screenings"] == first["distinct_screenings"] == first["images"]

    with env.sessions()() as s:
        job = s.get(Job, job_id)
        assert job.payload["sampling"]["black"] >= 1  # the black second was dropped
        assert job.payload["sampling"]["duplicate"] >= 1  # static shots give one thumbnail each
        items = s.scalars(select(JobItem).where(JobItem.job_id == job_id)).all()
        assert job.items_total == len(items) == job.items_done and job.items_failed == 0
        rows = s.execute(select(Image, Screening).join(Screening, Screening.image_id == Image.id)).all()
        verdicts = {}
        for image, screening in rows:
            assert image.source_kind == "frame" and image.title_id == job.title_id and image.video_id == job.video_id
            assert image.uri.startswith(f"s3://{env.bucket}/thumbnails/t-100/")
            assert screening.overlay_uri.startswith(f"s3://{env.bucket}/overlays/")
            verdicts.setdefault(segment_kind(spans, image.timestamp_s), []).append(str(screening.verdict))
    assert set(verdicts) == {"sharp", "blurred"}, verdicts
    # The blurred shots are flagged (review or reject: how far is the model's business,
    # judged in tests/test_end_to_end.py and the model card); the sharp ones pass.
    assert verdicts["blurred"] and all(v != "pass" for v in verdicts["blurred"]), verdicts
    assert len(verdicts["sharp"]) >= 2 and all(v == "pass" for v in verdicts["sharp"]), verdicts
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=env.bucket, Prefix="thumbnails/")["Contents"]]
    assert len(keys) == first["images"]


def test_vendor_job_with_a_corrupt_file_ends_partially_failed(queue_env: QueueEnv, s3_endpoint, tmp_path):
    env = queue_env
    s3 = s3_endpoint.client()
    for p in PORTRAITS[:2]:
        s3.upload_file(str(p), env.bucket, f"incoming/acme/{p.name}")
    good = (SAMPLES / "chelsea.jpg").read_bytes()
    s3.put_object(Bucket=env.bucket, Key="incoming/acme/broken.jpg", Body=good[: len(good) // 3])
    local = env.root / "local-art.jpg"  # a local file inside the worker's root
    shutil.copy(PORTRAITS[2], local)
    model = tiny_checkpoint(tmp_path / "tiny.safetensors", 0)
    out = env.qc(
        "enqueue",
        "submission",
        "--vendor",
        "acme",
        f"s3://{env.bucket}/incoming/acme/",
        f"s3://{env.bucket}/incoming/missing.jpg",
        str(local),
        "/etc/passwd",
    )
    [job_id] = job_ids(out.stdout)
    port = free_port()
    with env.worker(QC_MODEL_PATH=str(model), QC_METRICS_PORT=str(port), QC_LOG_FORMAT="json") as worker:
        [job] = env.wait_jobs([job_id], worker=worker)
        scraped = _metrics(port)
    assert job.status == JobStatus.PARTIALLY_FAILED
    # The worker's Prometheus endpoint counts what its pool child did.
    assert sum(v for (name, labels), v in scraped.items() if name == "qc_images_screened_total") == 3
    assert sum(v for (name, labels), v in scraped.items() if name == "qc_image_failures_total") == 3
    assert scraped[("qc_tasks_total", (("state", "succeeded"), ("task", "qc.screen_submission")))] == 1
    # JSON log lines carry the job id (and the image id for each screened image).
    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert any(r.get("job_id") == str(job_id) and r.get("image_id") for r in records), records[-5:]
    assert (job.items_total, job.items_done, job.items_failed) == (6, 3, 3)
    with env.sessions()() as s:
        reasons = dict(
            s.execute(
                select(JobItem.uri, JobItem.reason).where(JobItem.job_id == job_id, JobItem.status == "failed")
            ).all()
        )
        vendors = set(s.scalars(select(Image.vendor).where(Image.status == "ok")))
    assert "NoSuchKey" in reasons[f"s3://{env.bucket}/incoming/missing.jpg"]
    assert reasons[f"s3://{env.bucket}/incoming/acme/broken.jpg"]  # the decoder's own reason
    assert "outside the configured local roots" in reasons["/etc/passwd"]
    assert vendors == {"acme"}
    listing = env.qc("jobs", str(job_id))
    assert "partially_failed" in listing.stdout and "NoSuchKey" in listing.stdout


def test_rescan_after_a_new_model_screens_every_image_once_and_yields(queue_env: QueueEnv, s3_endpoint, tmp_path):
    env = queue_env
    s3 = s3_endpoint.client()
    names = ["coffee.jpg", "chelsea.jpg", "rocket.jpg", *(p.name for p in PORTRAITS)]
    for name in names:
        s3.upload_file(str(SAMPLES / name), env.bucket, f"art/{name}")
    model_a = tiny_checkpoint(tmp_path / "a.safetensors", 1)
    model_b = tiny_checkpoint(tmp_path / "b.safetensors", 2)
    [first] = job_ids(env.qc("enqueue", "submission", "--vendor", "v1", f"s3://{env.bucket}/art/").stdout)
    with env.worker(QC_MODEL_PATH=str(model_a)) as worker:
        env.wait_jobs([first], worker=worker)

    # New model: a rescan is queued *before* a new vendor job; the worker serves the vendor
    # queue first, and the rescan covers exactly the images model B has not seen.
    s3.upload_file(str(SAMPLES / "astronaut.jpg"), env.bucket, "late/astronaut.jpg")
    [rescan] = job_ids(env.qc("rescan", "--model", str(model_b)).stdout)
    [vendor] = job_ids(env.qc("enqueue", "submission", "--vendor", "v2", f"s3://{env.bucket}/late/").stdout)
    with env.worker(QC_MODEL_PATH=str(model_b)) as worker:
        jobs = env.wait_jobs([rescan, vendor], worker=worker)
        [again] = job_ids(env.qc("rescan", "--model", str(model_b)).stdout)
        [repeat] = env.wait_jobs([again], worker=worker)
        # Beat's nightly task makes a rescan job for the worker's own model and plans it.
        celery = make_celery(env.settings())
        celery.send_task("qc.nightly_rescan")
        celery.close()
        nightly = env.wait_jobs([again + 1], worker=worker)[0]
    by_id = {j.id: j for j in jobs}
    assert by_id[rescan].status == JobStatus.DONE and by_id[rescan].items_total == len(names)
    assert by_id[vendor].status == JobStatus.DONE
    assert by_id[vendor].finished_at <= by_id[rescan].started_at, "the rescan queue must yield"
    assert repeat.status == JobStatus.DONE and repeat.items_total == 0  # nothing left to rescan
    assert nightly.kind == "rescan" and nightly.status == JobStatus.DONE and nightly.items_total == 0
    with env.sessions()() as s:
        per_model = dict(
            s.execute(select(ModelVersion.id, func.count(Screening.id)).join(Screening).group_by(ModelVersion.id)).all()
        )
    assert sorted(per_model.values()) == [len(names), len(names) + 1]
    counts = _counts(env)
    assert counts["screenings"] == counts["distinct_screenings"]
