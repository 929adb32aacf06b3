"""``qc db``: migrate the configured database (Alembic) and say where it stands."""

from __future__ import annotations

from typing import Annotated

import typer

from qc_worker.cli.common import fail, first_line, load_settings
from qc_worker.config import Settings

app = typer.Typer(help="Database schema: upgrade, downgrade, current revision.", no_args_is_help=True)


def _on_database(settings: Settings, action):
    """Run ``action()``; a database that cannot be reached or used is one line and exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return action()
    except SQLAlchemyError as exc:
        raise fail(f"cannot use the database {settings.redacted()['database_url']}: {first_line(exc)}", 1) from exc


@app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the configured database (QC_DATABASE_URL) up to REVISION."""
    from qc_worker.db.migrate import current, upgrade

    settings = load_settings()
    _on_database(settings, lambda: upgrade(settings.database_url, revision))
    typer.echo(f"database at {_on_database(settings, lambda: current(settings.database_url)) or 'none'}")


@app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops every table).")] = "-1",
) -> None:
    """Migrate the configured database down to REVISION (default: one step)."""
    from qc_worker.db.migrate import current, downgrade

    settings = load_settings()
    _on_database(settings, lambda: downgrade(settings.database_url, revision))
    revision_now = _on_database(settings, lambda: current(settings.database_url))
    typer.echo(f"database at {revision_now or 'none (no tables)'}")


@app.command("current")
def db_current() -> None:
    """Print the configured database's revision (or 'none')."""
    from qc_worker.db.migrate import current

    settings = load_settings()
    typer.echo(_on_database(settings, lambda: current(settings.database_url)) or "none")
