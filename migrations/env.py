"""Alembic environment of the results database.

The URL is never hard-coded. In order, this uses: an open connection given in
``config.attributes["connection"]``; ``config.attributes["url"]`` (set by
:mod:`qc_worker.db.migrate`); ``alembic -x url=...``; ``sqlalchemy.url`` of the ini file
(unset in this repository); and finally ``QC_DATABASE_URL`` through the project's Settings.

SQLite runs in batch mode (``render_as_batch``), since it can alter little in place; and,
as Alembic advises, with foreign keys off while migrating (a batch "move and copy" drops
tables, which with foreign keys on would cascade deletes into other tables). The foreign
keys are checked once the migration is done.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection, make_url

from qc_worker.db.engine import make_engine
from qc_worker.db.models import Base

config = context.config

# Logging from the ini file only when run as the `alembic` command, never when the
# application drives Alembic (it has its own logging).
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        from qc_worker.config import get_settings

        url = get_settings().database_url
    return str(url)


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
    }


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: write the SQL instead of running it."""
    url = _url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise RuntimeError(f"foreign key violations after migrating: {problems[:10]}")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), sqlite_foreign_keys=False, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
