"""qc_worker.cli: the ``qc config`` command."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from qc_worker import __version__
from qc_worker.cli import app
from qc_worker.config import ENV_PREFIX, get_settings

runner = CliRunner()


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


def test_config_json_is_parseable_and_redacted(settings_env):
    settings_env.setenv("QC_DATABASE_URL", "postgresql://qc:hunter2@db.example:5432/qc")
    settings_env.setenv("QC_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    settings_env.setenv("QC_DEVICE", "cpu")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["database_url"] == "postgresql://qc:***@db.example:5432/qc"
    assert data["s3_secret_access_key"] == "***"
    assert data["device"] == "cpu"
    assert data["max_image_pixels"] == 100_000_000
    assert data["model_path"] is None
    assert "hunter2" not in result.output
    assert "wJalrXUtnFEMI" not in result.output


def test_config_table_shows_settings_and_masks_secrets(settings_env):
    settings_env.setenv("QC_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    settings_env.setenv("COLUMNS", "200")  # keep rich from wrapping the URL
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "max_image_pixels" in result.output
    assert "QC_DEVICE" in result.output
    assert "redis://:***@127.0.0.1:6379/0" in result.output
    assert "hunter2" not in result.output


def test_config_table_at_80_columns_shows_every_value(settings_env):
    settings_env.setenv("COLUMNS", "80")
    settings_env.setenv("QC_RETRY_MAX", "7")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert rows and all(len(line) <= 80 and line.endswith("│") for line in rows)  # nothing cut off
    cells = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in rows}
    assert cells["retry_max"] == "7" and cells["screen_chunk_size"] == "32"


def test_config_with_bad_environment_exits_2_with_a_clear_message(settings_env):
    settings_env.setenv("QC_DEVICE", "gpu")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 2
    assert "invalid configuration" in result.output
    assert "QC_DEVICE" in result.output
    assert "Traceback" not in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_qc_db_commands_walk_the_schema(tmp_path, monkeypatch):
    from qc_worker.config import get_settings
    from qc_worker.db.migrate import head

    monkeypatch.setenv("QC_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    try:
        assert runner.invoke(app, ["db", "current"]).stdout.strip() == "none"
        res = runner.invoke(app, ["db", "upgrade"])
        assert res.exit_code == 0 and head() in res.stdout
        assert runner.invoke(app, ["db", "current"]).stdout.strip() == head()
        res = runner.invoke(app, ["db", "downgrade", "base"])
        assert res.exit_code == 0 and "none" in res.stdout
    finally:
        get_settings.cache_clear()


UNREACHABLE = "postgresql://postgres@127.0.0.1:5999/x"


@pytest.mark.parametrize("args", [["db", "current"], ["db", "upgrade"], ["jobs"], ["screen", "{image}"]])
def test_an_unreachable_database_is_one_line_and_exit_1(settings_env, args, tmp_path):
    import shutil
    from pathlib import Path

    image = tmp_path / "coffee.jpg"
    shutil.copy(Path(__file__).resolve().parents[2] / "samples" / "images" / "coffee.jpg", image)
    settings_env.setenv("QC_DATABASE_URL", UNREACHABLE)
    result = runner.invoke(app, [a.format(image=image) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "5999" in lines[0], result.output
    assert "Traceback" not in result.output


def test_sub_folders_a_non_recursive_screen_skips_are_named(settings_env, tmp_path):
    import shutil
    from pathlib import Path

    (tmp_path / "art" / "season2").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "samples" / "images" / "coffee.jpg", tmp_path / "art" / "season2")
    (tmp_path / "art" / "empty").mkdir()
    settings_env.setenv("QC_DATABASE_URL", UNREACHABLE)  # stops the run right after the note
    result = runner.invoke(app, ["screen", str(tmp_path / "art")])
    assert "no images found" in result.output and "--recursive" in result.output  # top level is empty
    shutil.copy(tmp_path / "art" / "season2" / "coffee.jpg", tmp_path / "art" / "top.jpg")
    result = runner.invoke(app, ["screen", str(tmp_path / "art")])
    assert "note: 1 sub-folder(s) with images not screened; use --recursive" in result.output
