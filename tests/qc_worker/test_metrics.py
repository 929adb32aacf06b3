"""qc_worker.metrics: outcomes and tasks counted, scraped over real HTTP; multiprocess mode
with real child processes; queue depth read from the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import multiprocessing
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from qc_worker import metrics
from qc_worker.config import Settings
from qc_worker.metrics import (
    FAILURE_KINDS,
    MULTIPROC_VARIABLE,
    QueueDepthCollector,
    failure_kind,
    mark_process_dead,
    prepare_multiprocess,
    queue_keys,
    record_outcome,
    record_task,
    start_metrics_server,
    stop_metrics_server,
)
from qc_worker.values import Outcome
from tests.qc_worker import metrics_child

REDIS_URL = "redis://127.0.0.1:6379/0"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def make_settings(**overrides) -> Settings:
    base = {
        "_env_file": None,
        "redis_url": REDIS_URL,
        "redis_key_prefix": f"qc-test-{uuid.uuid4().hex}:",
        "metrics_port": free_port(),
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
def server() -> Iterator[None]:
    yield
    stop_metrics_server()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis does not answer at {REDIS_URL}: {exc}; start it and run again.", pytrace=False)
    yield client
    client.close()


def delete_prefixed(client: redis.Redis, prefix: str) -> None:
    for key in list(client.scan_iter(match=prefix + "*")):
        client.delete(key)


# --- failure kinds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (
            (
                "image is 20000x20000 = 400,000,000 pixels, over the limit of 100,000,000 "
                "(refused as a possible decompression bomb)"
            ),
            "too_large",
        ),
        ("s3://art/big.png is 300000000 bytes, more than the limit of 268435456", "too_large"),
        ("no such file or folder: /data/missing.jpg", "missing"),
        ("read s3://art/a.jpg: NoSuchKey The specified key does not exist.", "missing"),
        ("read s3://art/a.jpg: 404 Not Found", "missing"),
        ("cannot open video: moov atom not found", "video"),
        ("cannot decode image data: broken data stream when reading image file", "decode"),
        ("not an image (unrecognised file format)", "decode"),
        ("file is empty (0 bytes)", "decode"),
        ("cannot read image header: image file is truncated", "decode"),
        ("image has no pixels (0x10)", "decode"),
        ("(psycopg2.OperationalError) connection to server at 127.0.0.1 failed", "database"),
        ("read s3://art/a.jpg: AccessDenied Access Denied", "storage"),
        ("read s3://art/a.jpg: no S3 credentials configured", "storage"),
        ("/etc/passwd is outside the configured local roots", "storage"),
        ("cannot read /srv/art/a.jpg: Permission denied", "storage"),
        ("unsafe object key '../x': '..' would leave the bucket or root", "storage"),
        # A path or URI never decides the kind.
        ("cannot read /data/video/database/decode.jpg: Permission denied", "storage"),
        ("something nobody expected", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_failure_kind_maps_reasons_to_a_small_fixed_set(reason, kind):
    assert failure_kind(reason) == kind
    assert kind in FAILURE_KINDS


# --- recording and the endpoint --------------------------------------------------------------


def test_outcomes_and_tasks_are_served_on_a_real_endpoint(server):
    settings = make_settings()
    start_metrics_server(settings)
    start_metrics_server(settings)  # already serving: no second server, no error
    before = scrape(settings.metrics_port)

    timings = {"decode": 0.004, "detect": 0.2, "analyse": 0.05, "overlay": 0.03, "store": 0.01}
    record_outcome(Outcome("a.jpg", "screened", verdict="reject", timings=timings))
    record_outcome(Outcome("b.jpg", "screened", verdict="pass", timings={**timings, "bogus": 1.0}))
    record_outcome(Outcome("c.jpg", "failed", reason="not an image (unrecognised file format)"))
    record_outcome(Outcome("d.jpg", "failed", reason="no such file or folder: /x/d.jpg"))
    record_task("qc.screen_images", "succeeded", 12.5)
    record_task("qc.screen_images", "retried", None)
    record_task("qc.extract_frames", "failed", 0.5)

    after = scrape(settings.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("qc_images_screened_total", verdict="reject") == 1
    assert delta("qc_images_screened_total", verdict="pass") == 1
    assert delta("qc_image_failures_total", kind="decode") == 1
    assert delta("qc_image_failures_total", kind="missing") == 1
    for stage in ("decode", "detect", "analyse", "overlay", "store"):
        assert delta("qc_stage_seconds_count", stage=stage) == 2
    assert delta("qc_stage_seconds_sum", stage="detect") == pytest.approx(0.4)
    assert delta("qc_stage_seconds_bucket", stage="detect", le="0.25") == 2
    assert delta("qc_stage_seconds_bucket", stage="detect", le="0.1") == 0
    assert not any(dict(labels).get("stage") == "bogus" for _, labels in after)
    assert delta("qc_tasks_total", task="qc.screen_images", state="succeeded") == 1
    assert delta("qc_tasks_total", task="qc.screen_images", state="retried") == 1
    assert delta("qc_tasks_total", task="qc.extract_frames", state="failed") == 1
    assert delta("qc_task_seconds_count", task="qc.screen_images") == 1
    assert delta("qc_task_seconds_sum", task="qc.screen_images") == pytest.approx(12.5)
    # The buckets span 1 ms to a minute for stages, and up to the task time limit for tasks.
    stage_les = {dict(k[1])["le"] for k in after if k[0] == "qc_stage_seconds_bucket"}
    assert {"0.001", "60.0", "+Inf"} <= stage_les
    task_les = {dict(k[1])["le"] for k in after if k[0] == "qc_task_seconds_bucket"}
    assert {"1800.0", "+Inf"} <= task_les
    # The process's own metrics come along in single-process mode.
    assert any(name.startswith(("process_", "python_")) for name, _ in after)


def test_unknown_task_state_is_refused():
    with pytest.raises(ValueError, match="succeeded, retried, failed"):
        record_task("qc.screen_images", "exploded", 1.0)


def test_no_port_means_no_server(server):
    start_metrics_server(make_settings(metrics_port=None))
    assert metrics._server is None


# --- multiprocess mode -------------------------------------------------------------------------


@pytest.fixture
def multiproc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """prepare_multiprocess() in this test process, undone afterwards (environment variable,
    prometheus_client's value class, the module's folder)."""
    monkeypatch.delenv(MULTIPROC_VARIABLE, raising=False)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(metrics, "_multiproc_dir", None)
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale from an earlier run")
    yield directory
    stop_metrics_server()


def test_counts_of_child_processes_add_up_in_the_parents_scrape(multiproc):
    prepare_multiprocess(multiproc)
    assert not (multiproc / "counter_999999.db").exists()  # an earlier run's file is gone
    assert metrics._multiproc_dir == multiproc.resolve()

    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=metrics_child.record, args=("pass", 3, 1)),
        ctx.Process(target=metrics_child.record, args=("pass", 2, 2)),
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
        mark_process_dead(child.pid)
    # Each child wrote its own file, named by its pid.
    assert {f"counter_{c.pid}.db" for c in children} <= {p.name for p in multiproc.iterdir()}

    settings = make_settings()
    start_metrics_server(settings)
    samples = scrape(settings.metrics_port)
    assert value(samples, "qc_images_screened_total", verdict="pass") == 5
    assert value(samples, "qc_image_failures_total", kind="decode") == 3
    assert value(samples, "qc_stage_seconds_count", stage="detect") == 5
    assert value(samples, "qc_tasks_total", task="qc.screen_images", state="succeeded") == 2
    assert value(samples, "qc_task_seconds_sum", task="qc.screen_images") == pytest.approx(6.0)


# --- queue depth ----------------------------------------------------------------------------


def test_queue_keys_follow_kombus_redis_transport():
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    keys = queue_keys("frames", "p:")
    assert keys[0] == "p:frames"
    for step in PRIORITY_STEPS[1:]:
        assert f"p:frames{Channel.sep}{step}" in keys


def test_queue_depth_is_read_from_redis_at_scrape_time(server, redis_client):
    settings = make_settings()
    prefix = settings.redis_key_prefix
    try:
        frames, vendor_hi, rescan = (
            queue_keys("frames", prefix),
            queue_keys("vendor", prefix),
            queue_keys("rescan", prefix),
        )
        redis_client.lpush(frames[0], "m1", "m2")
        redis_client.lpush(frames[6], "m3")  # a priority sub-queue
        redis_client.lpush(vendor_hi[0], "m4")
        redis_client.lpush(rescan[9], "m5", "m6")
        redis_client.lpush("frames", "unprefixed: another deployment's queue")
        start_metrics_server(settings)
        samples = scrape(settings.metrics_port)
        assert value(samples, "qc_queue_depth_up") == 1
        assert value(samples, "qc_queue_depth", queue="frames") == 3
        assert value(samples, "qc_queue_depth", queue="vendor") == 1
        assert value(samples, "qc_queue_depth", queue="screen") == 0
        assert value(samples, "qc_queue_depth", queue="rescan") == 2

        redis_client.rpop(frames[0])  # consumed: the next scrape sees it
        assert value(scrape(settings.metrics_port), "qc_queue_depth", queue="frames") == 2
    finally:
        redis_client.lrem("frames", 1, "unprefixed: another deployment's queue")
        delete_prefixed(redis_client, prefix)


def test_queue_depth_counts_messages_kombu_published_with_a_global_prefix(redis_client):
    from kombu import Connection, Exchange, Queue

    prefix = f"qc-test-{uuid.uuid4().hex}:"
    exchange = Exchange("qc", type="direct")
    queues = [Queue(q, exchange, routing_key=q) for q in ("frames", "screen")]
    try:
        with Connection(REDIS_URL, transport_options={"global_keyprefix": prefix}) as conn:
            producer = conn.Producer()
            for priority in (0, 0, 5, 9):
                producer.publish(
                    {"n": priority},
                    exchange=exchange,
                    routing_key="frames",
                    declare=queues,
                    priority=priority,
                    serializer="json",
                )
            producer.publish({"n": 1}, exchange=exchange, routing_key="screen", declare=queues, serializer="json")
        # Messages went to the prefixed keys, sub-queues included.
        assert redis_client.llen(prefix + "frames") == 2
        collector = QueueDepthCollector(REDIS_URL, prefix)
        assert collector.depths() == {"frames": 4, "vendor": 0, "screen": 1, "rescan": 0}
    finally:
        delete_prefixed(redis_client, prefix)


def test_unreachable_redis_reports_down_and_the_scrape_still_works():
    collector = QueueDepthCollector(f"redis://127.0.0.1:{free_port()}/0", "x:", timeout_s=0.5)
    families = {f.name: f for f in collector.collect()}
    assert "qc_queue_depth" not in families
    assert families["qc_queue_depth_up"].samples[0].value == 0


def test_a_failure_is_counted_by_the_kind_its_error_carried():
    from prometheus_client import REGISTRY

    from qc_worker.metrics import record_outcome
    from qc_worker.values import Outcome
    from qc_worker.vocabulary import FailureKind, OutcomeStatus

    def count(kind):
        return REGISTRY.get_sample_value("qc_image_failures_total", {"kind": kind}) or 0.0

    before = count("missing"), count("too_large")
    # The text alone would read as "too_large"; the error said the object is missing.
    record_outcome(
        Outcome("s3://b/k.jpg", OutcomeStatus.FAILED, reason="over the limit", failure_kind=FailureKind.MISSING)
    )
    record_outcome(Outcome("s3://b/j.jpg", OutcomeStatus.FAILED, reason="over the limit"))
    assert (count("missing"), count("too_large")) == (before[0] + 1, before[1] + 1)
