"""Fixtures of the database tests: every test runs on SQLite and on PostgreSQL.

SQLite: a fresh file in ``tmp_path`` per test.

PostgreSQL: the real server CI starts on 127.0.0.1:5432 (user ``postgres``, trust auth).
Through an AUTOCOMMIT connection to the ``test`` database, each test session CREATEs its own
uniquely named database (``qc_test_<pid>_<random>``), migrates it once, and empties its
tables after every test; tests that need an empty, unmigrated database get one of their own
that is dropped when they end. Every database made here is DROPped (``WITH (FORCE)``) at
the end, so nothing depends on leftovers of earlier runs. When PostgreSQL does not answer,
the PostgreSQL variants fail with a message saying so; they never skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from qc_worker.db import migrate
from qc_worker.db.engine import make_engine
from qc_worker.db.models import Base

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]

TABLES = sorted(Base.metadata.tables)


@pytest.fixture(scope="session")
def migrated_pg_url(pg_databases: tuple[Callable[[], str], Callable[[str], None]]) -> Iterator[str]:
    """One PostgreSQL database per test session, migrated to head."""
    create, drop = pg_databases
    url = create()
    migrate.upgrade(url)
    yield url
    drop(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_db_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty database of its own (no tables), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    create, drop = request.getfixturevalue("pg_databases")
    url = create()
    yield url
    drop(url)


@pytest.fixture
def db_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a migrated database with empty tables."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'qc.db'}"
        migrate.upgrade(url)
        yield url
        return
    url = request.getfixturevalue("migrated_pg_url")
    yield url
    cleaner = create_engine(url, poolclass=NullPool)
    try:
        with cleaner.begin() as connection:
            connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    finally:
        cleaner.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An application engine (qc_worker.db.engine.make_engine) on the migrated database."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
