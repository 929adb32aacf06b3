"""Engines and sessions (qc_worker.db.engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from qc_worker.config import get_settings
from qc_worker.db import Title, session_scope
from qc_worker.db.engine import dispose_engines, get_engine, make_engine
from qc_worker.db.migrate import upgrade


def test_db_sqlite_engine_enforces_foreign_keys_and_waits_when_busy(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", sqlite_busy_timeout_s=7.5)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7500
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
    memory = make_engine("sqlite://")
    try:
        with memory.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
    finally:
        memory.dispose()


def test_db_session_scope_commits_or_rolls_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            session.add(Title(external_id="kept"))
        with pytest.raises(RuntimeError), session_scope(engine) as session:
            session.add(Title(external_id="dropped"))
            session.flush()
            raise RuntimeError("boom")
        with session_scope(engine) as session:
            # SAVEPOINTs work on SQLite too (the driver's own transaction handling is off).
            with pytest.raises(IntegrityError), session.begin_nested():
                session.execute(text("INSERT INTO titles (external_id) VALUES ('kept')"))
            assert session.scalars(select(Title.external_id)).all() == ["kept"]
    finally:
        engine.dispose()


def test_db_default_engine_uses_settings(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'configured.db'}"
    monkeypatch.setenv("QC_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        assert str(make_engine().url) == url
        upgrade()
        with session_scope() as session:
            session.add(Title(external_id="via-settings"))
        assert get_engine() is get_engine(url)
        with get_engine().connect() as connection:
            assert connection.exec_driver_sql("SELECT external_id FROM titles").scalar() == ("via-settings")
    finally:
        dispose_engines()
        get_settings.cache_clear()
