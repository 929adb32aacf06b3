"""The Alembic migrations, driven through qc_worker.db.migrate, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.pool import NullPool

from qc_worker.config import get_settings
from qc_worker.db import migrate
from qc_worker.db.engine import make_engine
from qc_worker.db.models import Base

from .conftest import TABLES

REPO_ROOT = Path(__file__).resolve().parents[3]
#: Every revision, oldest first; a new migration appends its id here.
REVISIONS = ["0001", "0002", "0003", "0004", "0005"]
HEAD = REVISIONS[-1]
#: The analyst views (revision 0003, docs/sql.md), on SQLite and PostgreSQL alike.
VIEWS = {
    "analyst_rejected_frames",
    "analyst_title_summary",
    "analyst_title_thumbnails",
    "analyst_vendor_weekly",
    "analyst_verdict_changes",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _relations(url: str) -> set[str]:
    """Tables and views."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()) | set(inspector.get_view_names())
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = make_engine(url, poolclass=NullPool)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_db_head_is_the_newest_revision() -> None:
    assert migrate.head() == HEAD
    assert migrate.MIGRATIONS_DIR == REPO_ROOT / "migrations"


def test_db_upgrade_downgrade_upgrade(empty_db_url: str, tmp_path: Path, monkeypatch) -> None:
    # The migrations folder is found relative to the package, whatever the directory.
    monkeypatch.chdir(tmp_path)
    url = empty_db_url
    assert migrate.current(url) is None
    assert _tables(url) == set()

    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    assert _tables(url) == {*TABLES, "alembic_version"}
    assert _relations(url) == {*TABLES, *VIEWS, "alembic_version"}

    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert _relations(url) - {"alembic_version"} == set()

    migrate.upgrade(url, "head")
    assert migrate.current(url) == HEAD
    assert _tables(url) == {*TABLES, "alembic_version"}

    # The default downgrade goes one revision back.
    migrate.downgrade(url)
    assert migrate.current(url) == REVISIONS[-2]
    assert "confidence" not in _columns(url, "blur_regions")
    migrate.downgrade(url)
    assert "reason" not in _columns(url, "crop_rois")


def test_db_migrated_schema_matches_the_models(db_url: str) -> None:
    """The hand-written revision and the ORM models describe the same schema."""
    engine = make_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            inspector = inspect(connection)
            cascades = {
                (table, fk["referred_table"]): fk["options"].get("ondelete")
                for table in ("blur_regions", "crop_rois", "screenings")
                for fk in inspector.get_foreign_keys(table)
            }
    finally:
        engine.dispose()
    assert cascades[("blur_regions", "screenings")] == "CASCADE"
    assert cascades[("crop_rois", "screenings")] == "CASCADE"
    assert cascades[("screenings", "images")] == "CASCADE"


def test_db_upgrade_without_url_uses_settings(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'from-settings.db'}"
    monkeypatch.setenv("QC_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    get_settings.cache_clear()
    try:
        migrate.upgrade()
        assert migrate.current() == HEAD
        assert migrate.current(url) == HEAD
    finally:
        get_settings.cache_clear()


def test_db_alembic_command_line_takes_x_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    ini = str(REPO_ROOT / "alembic.ini")
    base = [sys.executable, "-m", "alembic", "-c", ini, "-x", f"url={url}"]
    done = subprocess.run([*base, "upgrade", "head"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert migrate.current(url) == HEAD
    done = subprocess.run([*base, "current"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{HEAD} (head)" in done.stdout
    # `alembic check`: autogenerate finds nothing the migrations lack.
    done = subprocess.run([*base, "check"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///nowhere.db", "CREATE TABLE screenings"),
        ("postgresql+psycopg2://nobody@nowhere.invalid/qc", "JSONB"),
    ],
)
def test_db_offline_sql_needs_no_server(url: str, expected: str, capsys) -> None:
    migrate.upgrade(url, sql=True)
    out = capsys.readouterr().out
    assert expected in out
    assert "CREATE TABLE crop_rois" in out


def test_migrating_says_nothing_at_info_level(tmp_path, caplog):
    import logging

    from qc_worker.db.migrate import upgrade

    caplog.set_level(logging.INFO)
    upgrade(f"sqlite:///{tmp_path / 'quiet.db'}")
    assert not [r for r in caplog.records if r.name.startswith("alembic") and r.levelno < logging.WARNING]
