"""``qc jobs``: status and counts of recent jobs, or one job's details."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qc_worker.cli.common import fail, load_settings, require_schema

COLUMNS = ("id", "kind", "status", "screened", "failed", "pending", "total", "error")


def jobs_command(
    job_id: Annotated[int | None, typer.Argument(help="One job's details (default: the latest jobs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many recent jobs to list.")] = 50,
) -> None:
    """Status and counts of jobs: queued, running, done, failed or partially failed."""
    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.jobs import job_summary

    settings = load_settings()
    require_schema(settings)
    with get_sessionmaker(settings.database_url).begin() as s:
        rows = job_summary(s, job_id, limit)
    if job_id is not None and not rows:
        raise fail(f"no job {job_id}")
    if as_json:
        typer.echo(json.dumps(rows if job_id is None else rows[0], indent=2))
        return
    table = Table(title="Jobs")
    for h in COLUMNS:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*(escape(str(r[k] if r[k] is not None else "")) for k in COLUMNS))
    Console().print(table)
    if job_id is not None and rows[0]["failures"]:
        for f in rows[0]["failures"]:
            typer.echo(f"failed {f['uri']}: {f['reason']}")
