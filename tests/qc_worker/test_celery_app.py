"""The Celery app's configuration, from Settings: JSON only, late acks, prefetch, the Redis
transport options, queue order, routes for every task, and the nightly beat schedule."""

from __future__ import annotations

import pytest

from qc_worker.celery_app import QUEUES, TASK_ROUTES, make_celery
from qc_worker.config import Settings


def _settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.fixture
def app():
    app = make_celery(
        _settings(
            redis_key_prefix="qc-staging:",
            prefetch_multiplier=3,
            visibility_timeout_s=5400,
            task_time_limit_s=1200,
            rescan_at="04:35",
        )
    )
    yield app
    app.close()


def test_json_only(app):
    conf = app.conf
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert conf.task_serializer == "json" and conf.event_serializer == "json"


def test_late_acks_and_redelivery_of_lost_tasks(app):
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.task_ignore_result is True and not conf.result_backend


def test_prefetch_from_settings(app):
    assert app.conf.worker_prefetch_multiplier == 3
    default = make_celery(_settings())
    assert default.conf.worker_prefetch_multiplier == 1  # GPU workers must not hoard tasks
    default.close()


def test_redis_transport_options(app):
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == 5400
    assert options["global_keyprefix"] == "qc-staging:"
    assert options["queue_order_strategy"] == "priority"


def test_no_key_prefix_when_none_is_configured():
    app = make_celery(_settings())
    assert "global_keyprefix" not in app.conf.broker_transport_options
    assert app.conf.broker_transport_options["visibility_timeout"] == 7200
    app.close()


def test_time_limits_fit_inside_the_visibility_timeout(app):
    conf = app.conf
    assert conf.task_time_limit == 1200
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.task_time_limit * 2 <= conf.broker_transport_options["visibility_timeout"]


def test_broker_url_from_settings():
    app = make_celery(_settings(redis_url="redis://redis.internal:6380/2"))
    assert app.conf.broker_url == "redis://redis.internal:6380/2"
    app.close()


def test_queues_in_serving_order(app):
    assert QUEUES == ("frames", "vendor", "screen", "rescan")
    assert [q.name for q in app.conf.task_queues] == list(QUEUES)
    assert app.conf.task_default_queue in QUEUES


def test_every_task_is_routed_to_a_known_queue(app):
    import qc_worker.tasks  # noqa: F401  (registers the tasks on the process app)
    from qc_worker.celery_app import app as process_app

    names = {name for name in process_app.tasks if name.startswith("qc.")}
    assert names == set(TASK_ROUTES), "every task needs a route, every route a task"
    assert {route["queue"] for route in TASK_ROUTES.values()} <= set(QUEUES)
    for name in names:
        assert app.amqp.router.route({}, name)["queue"].name == TASK_ROUTES[name]["queue"]
    assert TASK_ROUTES["qc.screen_chunk"]["queue"] == "screen"
    assert TASK_ROUTES["qc.plan_rescan"]["queue"] == TASK_ROUTES["qc.nightly_rescan"]["queue"] == "rescan"


def test_beat_schedule_at_the_configured_time(app):
    schedule = app.conf.beat_schedule
    assert set(schedule) == {"nightly-rescan"}
    entry = schedule["nightly-rescan"]
    assert entry["task"] == "qc.nightly_rescan" and entry["task"] in TASK_ROUTES
    assert entry["options"]["queue"] == "rescan"
    cron = entry["schedule"]
    assert cron.hour == {4} and cron.minute == {35}
    assert cron.day_of_week == set(range(7)) and cron.day_of_month == set(range(1, 32))
    assert app.conf.timezone == "UTC" and app.conf.enable_utc is True


@pytest.mark.parametrize("at, hour, minute", [("00:00", 0, 0), ("03:00", 3, 0), ("23:59", 23, 59)])
def test_beat_time_follows_qc_rescan_at(at, hour, minute):
    app = make_celery(_settings(rescan_at=at))
    cron = app.conf.beat_schedule["nightly-rescan"]["schedule"]
    assert (cron.hour, cron.minute) == ({hour}, {minute})
    app.close()


def test_beat_schedule_file_from_settings(tmp_path):
    app = make_celery(_settings(beat_schedule_path=tmp_path / "beat"))
    assert app.conf.beat_schedule_filename == str(tmp_path / "beat")
    app.close()
