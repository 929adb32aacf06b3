"""Engines and sessions for the results database.

:func:`make_engine` builds an engine from a SQLAlchemy URL (``Settings.database_url`` when
none is given). PostgreSQL engines check connections before use (``pool_pre_ping``), so a
worker survives a database restart. SQLite engines get, on every new connection:

* ``PRAGMA foreign_keys=ON`` (SQLite ignores foreign keys otherwise, so ``ON DELETE
  CASCADE`` would do nothing), unless ``sqlite_foreign_keys=False`` (migrations);
* ``PRAGMA busy_timeout`` so concurrent writers wait for each other instead of failing
  at once with "database is locked";
* ``PRAGMA journal_mode=WAL`` for file databases, so readers do not block the writer;
* real transactions: the pysqlite driver's own transaction handling is switched off and
  SQLAlchemy emits ``BEGIN`` itself, so SAVEPOINTs (``Session.begin_nested``) work.

The screening code is handed a sessionmaker (:func:`get_sessionmaker`, one per process
and URL) and does each unit of work as ``with sessions.begin() as session:`` (SQLAlchemy's
own commit-or-roll-back block). :func:`session_scope` is the same block for a script or a
test that has only an engine or a URL::

    with session_scope(url) as session:
        save_screening(session, ...)
    # committed here; rolled back if the block raised
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DEFAULT_SQLITE_BUSY_TIMEOUT_S",
    "default_url",
    "dispose_engines",
    "get_engine",
    "get_sessionmaker",
    "make_engine",
    "make_sessionmaker",
    "session_scope",
]

DEFAULT_SQLITE_BUSY_TIMEOUT_S = 30.0


def default_url() -> str:
    """The configured database URL (``QC_DATABASE_URL``, default ``sqlite:///./qc.db``)."""
    from qc_worker.config import get_settings

    return get_settings().database_url


def make_engine(
    url: str | URL | None = None,
    *,
    sqlite_foreign_keys: bool = True,
    sqlite_busy_timeout_s: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S,
    sqlite_wal: bool = True,
    **kwargs: Any,
) -> Engine:
    """A new engine for ``url`` (the configured URL when ``None``).

    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    url = make_url(url if url is not None else default_url())
    if url.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}) or {})
        connect_args.setdefault("timeout", sqlite_busy_timeout_s)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(
            engine,
            foreign_keys=sqlite_foreign_keys,
            busy_timeout_ms=int(sqlite_busy_timeout_s * 1000),
            wal=sqlite_wal and _is_file_database(url),
        )
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _is_file_database(url: URL) -> bool:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return False
    return "mode=memory" not in database and url.query.get("mode") != "memory"


def _configure_sqlite(engine: Engine, *, foreign_keys: bool, busy_timeout_ms: int, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def get_engine(url: str | None = None) -> Engine:
    """A process-wide engine for ``url`` (the configured URL when ``None``), made once."""
    key = url if url is not None else default_url()
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """A process-wide session factory for ``url`` (the configured URL when ``None``)."""
    key = url if url is not None else default_url()
    engine = get_engine(key)
    with _lock:
        factory = _sessionmakers.get(key)
        if factory is None:
            factory = _sessionmakers[key] = make_sessionmaker(engine)
        return factory


def dispose_engines() -> None:
    """Close the pools of every process-wide engine (after fork, at shutdown, in tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()


@contextmanager
def session_scope(bind: Engine | str | None = None) -> Iterator[Session]:
    """One unit of work: a session that commits at the end of the block, or rolls back.

    ``bind`` is an engine, a URL, or ``None`` for the configured database.
    """
    if isinstance(bind, Engine):
        factory = make_sessionmaker(bind)
    else:
        factory = get_sessionmaker(bind)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
