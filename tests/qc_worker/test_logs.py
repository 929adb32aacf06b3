"""qc_worker.logs: JSON and text lines on stderr, ids from log_context, secrets masked,
configure_logging idempotent."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from qc_worker.config import REDACTED, Settings
from qc_worker.logs import (
    configure_logging,
    current_context,
    log_context,
    pop_context,
    push_context,
    secret_values,
)

log = logging.getLogger("qc_worker.test_logs")

SECRET_KEY = 'wJalr/XUtnFEMI+K7MDENG"bPx\\RfiCY'  # slash, plus, quote, backslash
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
DB_PASSWORD = "db%40pass"  # percent-encoded '@' in the URL
REDIS_PASSWORD = "redis-pw-0451"


def ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, "_qc_handler", False)]


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in ours(root):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def settings(**overrides) -> Settings:
    return Settings(_env_file=None, **overrides)


def secret_settings(log_format: str) -> Settings:
    return settings(
        log_format=log_format,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        database_url=f"postgresql+psycopg2://qc:{DB_PASSWORD}@db:5432/qc",
        redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0?token=tok-77",
    )


def json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_ids_inside_log_context_only(capsys):
    configure_logging(settings(log_format="json"))
    log.info("before")
    with log_context(job_id=7, image_id="img-42"):
        log.info("inside %s", "job")
        with log_context(task_id="t-1", image_id="img-43"):
            log.warning("nested")
        log.info("back")
    log.info("after")

    lines = json_lines(capsys.readouterr().err)
    by_message = {line["message"]: line for line in lines}
    assert set(by_message) == {"before", "inside job", "nested", "back", "after"}
    for message in ("before", "after"):
        assert not {"job_id", "image_id", "task_id"} & set(by_message[message])
    assert by_message["inside job"]["job_id"] == "7"
    assert by_message["inside job"]["image_id"] == "img-42"
    assert "task_id" not in by_message["inside job"]
    assert by_message["nested"] == {
        **by_message["nested"],
        "job_id": "7",
        "image_id": "img-43",
        "task_id": "t-1",
        "level": "WARNING",
    }
    assert by_message["back"]["image_id"] == "img-42"
    first = by_message["before"]
    assert first["level"] == "INFO" and first["logger"] == "qc_worker.test_logs"
    assert datetime.fromisoformat(first["time"]).utcoffset() == timedelta(0)
    assert "qc_context_keys" not in first


def test_text_lines_show_ids_after_the_message(capsys):
    configure_logging(settings(log_format="text"))
    with log_context(job_id=3, image_id=9):
        log.info("screened")
    log.info("plain")
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("INFO qc_worker.test_logs: screened [job_id=3 image_id=9]")
    assert err[1].endswith("INFO qc_worker.test_logs: plain")


def test_extra_fields_and_exceptions_are_json(capsys):
    configure_logging(settings(log_format="json"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", extra={"uri": "s3://art/a.jpg"})
    (line,) = json_lines(capsys.readouterr().err)
    assert line["uri"] == "s3://art/a.jpg"
    assert "RuntimeError: boom" in line["exc_info"]


def test_level_comes_from_settings(capsys):
    configure_logging(settings(log_level="WARNING"))
    log.info("hidden")
    log.warning("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "hidden" not in err


def test_configuring_twice_leaves_one_handler_with_the_latest_settings(capsys):
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "_qc_handler", False)]
    configure_logging(settings(log_format="text"))
    configure_logging(settings(log_format="json"))
    assert len(ours(root)) == 1
    assert [h for h in root.handlers if not getattr(h, "_qc_handler", False)] == others
    log.info("once")
    lines = json_lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == ["once"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_never_reach_the_output(capsys, log_format):
    s = secret_settings(log_format)
    configure_logging(s)
    log.info("secret key is %s", SECRET_KEY)
    log.info(f"access key {ACCESS_KEY} and the raw URL {s.database_url}")
    log.info("redis at %r", s.redis_url)
    log.warning("decoded password: %s", "db@pass")
    log.info("as an extra", extra={"credentials": {"secret": SECRET_KEY, "key": ACCESS_KEY}})
    with log_context(job_id=REDIS_PASSWORD):
        log.info("in a context id")
    try:
        raise ValueError(f"login failed for {SECRET_KEY}")
    except ValueError:
        log.exception("with a traceback")
    err = capsys.readouterr().err

    for secret in (
        SECRET_KEY,
        ACCESS_KEY,
        DB_PASSWORD,
        "db@pass",
        REDIS_PASSWORD,
        "tok-77",
        json.dumps(SECRET_KEY)[1:-1],
        repr(SECRET_KEY)[1:-1],
    ):
        assert secret not in err, f"{secret!r} leaked"
    assert REDACTED in err
    assert "postgresql+psycopg2://qc:***@db:5432/qc" in err  # the rest of the line stays readable
    if log_format == "json":
        assert len(json_lines(err)) == 7  # masking keeps every line valid JSON


def test_secret_values_come_from_secret_fields_and_urls():
    found = secret_values(secret_settings("json"))
    assert found == {SECRET_KEY, ACCESS_KEY, DB_PASSWORD, REDIS_PASSWORD, "tok-77"}
    # A setting whose name merely contains "key" is not a secret (and "" is never one).
    assert secret_values(settings(redis_key_prefix="qc-staging:")) == set()


def test_push_and_pop_context_for_signal_handlers():
    token = push_context(task_id="abc", image_id=None)
    try:
        assert current_context() == {"task_id": "abc"}
    finally:
        pop_context(token)
    assert current_context() == {}


def test_context_ids_may_not_shadow_record_attributes():
    with pytest.raises(ValueError, match="message"), log_context(message="x"):
        pass


def test_context_does_not_leak_into_other_threads():
    seen = {}
    with log_context(job_id=1):
        thread = threading.Thread(target=lambda: seen.update(current_context()))
        thread.start()
        thread.join()
    assert seen == {}
