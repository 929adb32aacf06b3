"""Drive the Alembic migrations from Python (and from ``qc db upgrade|downgrade|current``).

The migrations live in ``migrations/`` at the repository root, found relative to this
package, so these work from any working directory. ``url=None`` means the configured
database (``QC_DATABASE_URL``). The URL is handed to Alembic as a Config attribute, never
through the ini file, so passwords with ``%`` in them survive and nothing is written down.

    upgrade("postgresql+psycopg2://qc:pw@db:5432/qc")   # to the newest revision
    current(url)                                        # -> "0001" (None when empty)
    downgrade(url)                                      # one revision back
    downgrade(url, "base")                              # drop everything
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool

from qc_worker.db.engine import default_url, make_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current", "downgrade", "head", "upgrade"]

#: The Alembic environment (env.py, versions/) of the repository.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# "Context impl SQLiteImpl." and "Will assume non-transactional DDL." at INFO on every
# `qc screen`: Alembic's chatter is for its own command line. Unless the application set
# a level for it, only its warnings come through (revisions applied are still reported by
# the commands that apply them).
_ALEMBIC_LOG = logging.getLogger("alembic")
if _ALEMBIC_LOG.level == logging.NOTSET:
    _ALEMBIC_LOG.setLevel(logging.WARNING)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for ``migrations/`` and ``url`` (the configured URL when None).

    It reads no ini file, so Alembic leaves the application's logging alone.
    """
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(
            f"Alembic migrations not found at {MIGRATIONS_DIR}: the database commands need "
            "the repository's migrations/ folder beside the qc_worker package"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url if url is not None else default_url()
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head", *, sql: bool = False) -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest).

    ``sql=True`` prints the SQL instead of running it (Alembic's offline mode).
    """
    command.upgrade(alembic_config(url), revision, sql=sql)


def downgrade(url: str | None = None, revision: str = "-1", *, sql: bool = False) -> None:
    """Migrate the database at ``url`` down to ``revision``.

    The default, ``"-1"``, goes one revision back; ``"base"`` removes every table.
    """
    command.downgrade(alembic_config(url), revision, sql=sql)


def current(url: str | None = None) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` when it has none."""
    engine = make_engine(url if url is not None else default_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision in ``migrations/versions``."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
