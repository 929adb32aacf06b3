"""Fixtures shared by every test package: the real PostgreSQL server's throwaway databases.

PostgreSQL is the server CI starts on 127.0.0.1:5432 (user ``postgres``, trust auth).
Through an AUTOCOMMIT connection to the ``test`` database, tests CREATE uniquely named
databases (``qc_test_<pid>_<random>``) and every one is DROPped (``WITH (FORCE)``) at the
end, so nothing depends on leftovers of earlier runs. When PostgreSQL does not answer,
tests that need it fail with a message saying so; they never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/test"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the ``test`` database, for CREATE/DROP DATABASE."""
    engine = create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL does not answer at {PG_HOST}:{PG_PORT} (user postgres, database "
            f"'test'): {exc.orig}. The database tests need the real server: start it "
            "(infra/ci/ensure-services.sh does) and run them again.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_databases(pg_admin: Engine) -> Iterator[tuple[Callable[[], str], Callable[[str], None]]]:
    """``(create, drop)``: make a uniquely named database (its URL), and drop one."""
    made: list[str] = []

    def create() -> str:
        name = f"qc_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop(url: str) -> None:
        name = make_url(url).database
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in made:
            made.remove(name)

    yield create, drop
    for name in list(made):
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
