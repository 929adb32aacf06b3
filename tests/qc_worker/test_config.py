"""qc_worker.config: defaults, QC_ overrides, .env files, validation and redaction."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from qc_worker.config import (
    ENV_PREFIX,
    REDACTED,
    Settings,
    format_validation_error,
    get_settings,
    redact_url,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    """A clean configuration: no ``QC_*`` variables, no ``.env`` (runs in an empty tmp dir),
    and the :func:`get_settings` cache cleared before and after."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults_are_the_embedded_setup(settings_env):
    s = Settings()
    assert s.database_url == "sqlite:///./qc.db"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.s3_endpoint_url is None
    assert s.s3_bucket is None
    assert s.s3_region == "us-east-1"
    assert s.local_root == Path(".")
    assert s.storage_kind == "local"
    assert s.model_path is None
    assert s.device == "auto"
    assert s.max_image_pixels == 100_000_000
    assert s.log_level == "INFO"


def test_every_field_is_described():
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"


def test_qc_environment_overrides(settings_env):
    settings_env.setenv("QC_DEVICE", "CPU")
    settings_env.setenv("QC_MAX_IMAGE_PIXELS", "4096")
    settings_env.setenv("QC_LOG_LEVEL", "debug")
    settings_env.setenv("QC_DATABASE_URL", "postgresql+psycopg://qc:pw@127.0.0.1:5432/qc")
    settings_env.setenv("QC_S3_BUCKET", "artwork")
    settings_env.setenv("QC_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    settings_env.setenv("QC_MODEL_PATH", "/models/v2.pt")
    s = Settings()
    assert s.device == "cpu"
    assert s.max_image_pixels == 4096
    assert s.log_level == "DEBUG"
    assert s.database_url.startswith("postgresql+psycopg://")
    assert s.storage_kind == "s3"
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert s.model_path == Path("/models/v2.pt")


def test_unprefixed_variables_are_ignored(settings_env):
    settings_env.setenv("DEVICE", "cuda")
    settings_env.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    s = Settings()
    assert s.device == "auto"
    assert s.database_url == "sqlite:///./qc.db"


def test_blank_optional_values_mean_unset(settings_env):
    settings_env.setenv("QC_S3_BUCKET", "")
    settings_env.setenv("QC_MODEL_PATH", "  ")
    s = Settings()
    assert s.s3_bucket is None
    assert s.model_path is None


def test_dotenv_file_is_read_and_environment_wins(settings_env, tmp_path):
    (tmp_path / ".env").write_text("QC_LOG_LEVEL=warning\nQC_DEVICE=cuda\n", encoding="utf-8")
    settings_env.setenv("QC_DEVICE", "cpu")
    s = Settings()
    assert s.log_level == "WARNING"  # from the file
    assert s.device == "cpu"  # the environment beats the file
    assert Settings(_env_file=None).log_level == "INFO"  # tests can switch the file off


def test_get_settings_is_cached_until_cleared(settings_env):
    first = get_settings()
    assert get_settings() is first
    settings_env.setenv("QC_DEVICE", "cpu")
    assert get_settings().device == "auto"  # cached
    get_settings.cache_clear()
    assert get_settings().device == "cpu"


def test_constructor_overrides_for_tests(settings_env):
    s = Settings(_env_file=None, device="cuda", max_image_pixels=10)
    assert (s.device, s.max_image_pixels) == ("cuda", 10)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("device", "gpu", r"'auto', 'cpu' or 'cuda'"),
        ("max_image_pixels", 0, r"greater than 0"),
        ("max_image_pixels", -5, r"greater than 0"),
        ("max_image_pixels", "lots", r"valid integer"),
        ("log_level", "chatty", r"'DEBUG'"),
        ("redis_url", "http://127.0.0.1:6379", r"redis://, rediss:// or unix://"),
        ("database_url", "qc.db", r"SQLAlchemy URL"),
        ("s3_endpoint_url", "127.0.0.1:9000", r"http:// or https://"),
        ("s3_region", " ", r"must not be empty"),
    ],
)
def test_invalid_values_raise_a_clear_error(settings_env, field, value, expected):
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **{field: value})
    text = str(info.value)
    assert field in text
    assert re.search(expected, text), text


def test_invalid_environment_names_the_variable(settings_env):
    settings_env.setenv("QC_DEVICE", "tpu")
    settings_env.setenv("QC_DATABASE_URL", "nonsense://u:hunter2@h/db")
    settings_env.setenv("QC_REDIS_URL", "http://u:hunter2@h")
    with pytest.raises(ValidationError) as info:
        Settings()
    message = format_validation_error(info.value)
    assert "QC_DEVICE" in message
    assert "'tpu'" in message
    assert "QC_REDIS_URL" in message
    assert "hunter2" not in message  # a bad URL is echoed with its password masked


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://qc:hunter2@db.example:5432/qc",
            "postgresql://qc:***@db.example:5432/qc",
        ),
        (
            "postgresql+psycopg://user:p%40ss:word@host/db",
            "postgresql+psycopg://user:***@host/db",
        ),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "postgresql://qc@host/db?password=hunter2&sslmode=require",
            "postgresql://qc@host/db?password=***&sslmode=require",
        ),
        ("postgresql://qc@host/db", "postgresql://qc@host/db"),
        ("sqlite:///./qc.db", "sqlite:///./qc.db"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redacted_masks_every_secret(settings_env):
    settings_env.setenv("QC_DATABASE_URL", "postgresql://qc:hunter2@db:5432/qc")
    settings_env.setenv("QC_REDIS_URL", "redis://:hunter3@redis:6379/0")
    settings_env.setenv("QC_S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
    settings_env.setenv("QC_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    s = Settings()
    # The real values stay available to the code that needs them.
    assert s.s3_secret_access_key is not None
    assert s.s3_secret_access_key.get_secret_value() == "wJalrXUtnFEMI"
    values = s.redacted()
    assert values["database_url"] == f"postgresql://qc:{REDACTED}@db:5432/qc"
    assert values["redis_url"] == f"redis://:{REDACTED}@redis:6379/0"
    assert values["s3_access_key_id"] == REDACTED
    assert values["s3_secret_access_key"] == REDACTED
    assert values["s3_bucket"] is None  # unset stays visibly unset
    flat = repr(values) + repr(s)
    for secret in ("hunter2", "hunter3", "AKIAEXAMPLE", "wJalrXUtnFEMI"):
        assert secret not in flat


def test_nothing_else_reads_the_environment():
    """The design's rule: only qc_worker/config.py reads os.environ."""
    pattern = re.compile(r"\bos\.environ\b|\bos\.getenv\b|\bgetenv\(|\bfrom os import .*environ")
    config = REPO / "qc_worker" / "config.py"
    offenders = []
    for package in ("qc_worker", "model_training"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == config:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "read settings through qc_worker.config instead:\n" + "\n".join(offenders)


def test_task_limits_must_fit_inside_the_visibility_timeout():
    """Redis redelivers what is unacknowledged after the visibility timeout: a task, or a
    retry waiting out its countdown, must end well before it."""
    with pytest.raises(ValidationError, match="QC_TASK_TIME_LIMIT_S"):
        Settings(_env_file=None, visibility_timeout_s=600, task_time_limit_s=400)
    with pytest.raises(ValidationError, match="QC_RETRY_BACKOFF_MAX_S"):
        Settings(_env_file=None, visibility_timeout_s=600, task_time_limit_s=300, retry_backoff_max_s=400)
    assert Settings(_env_file=None, visibility_timeout_s=600, task_time_limit_s=300, retry_backoff_max_s=300)


def test_a_key_prefix_is_shown_while_keys_stay_masked():
    from qc_worker.config import is_sensitive_name

    assert not is_sensitive_name("redis_key_prefix")
    assert all(is_sensitive_name(n) for n in ("s3_access_key_id", "AWSAccessKeyId", "api_key", "x-api-key"))
    shown = Settings(_env_file=None, redis_key_prefix="qc-prod").redacted()
    assert shown["redis_key_prefix"] == "qc-prod"
