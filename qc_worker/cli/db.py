"""``qc db``: migrate the configured database (Alembic) and say where it stands."""

from __future__ import annotations

from typing import Annotated

import typer

from qc_worker.cli.common import load_settings

app = typer.Typer(help="Database schema: upgrade, downgrade, current revision.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the configured database (QC_DATABASE_URL) up to REVISION."""
    from qc_worker.db.migrate import current, upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {current(settings.database_url) or 'none'}")


@app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops every table).")] = "-1",
) -> None:
    """Migrate the configured database down to REVISION (default: one step)."""
    from qc_worker.db.migrate import current, downgrade

    settings = load_settings()
    downgrade(settings.database_url, revision)
    typer.echo(f"database at {current(settings.database_url) or 'none (no tables)'}")


@app.command("current")
def db_current() -> None:
    """Print the configured database's revision (or 'none')."""
    from qc_worker.db.migrate import current

    settings = load_settings()
    typer.echo(current(settings.database_url) or "none")
