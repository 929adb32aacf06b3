"""``qc enqueue titles|submission``: create jobs (:mod:`qc_worker.flows`) and queue them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from qc_worker.catalog import CatalogError, parse_catalog
from qc_worker.cli.common import err, fail, load_settings, queue_jobs, require_schema
from qc_worker.vocabulary import TaskName

app = typer.Typer(help="Queue work for the workers: catalog titles, vendor submissions.", no_args_is_help=True)


@app.command("titles")
def enqueue_titles(
    catalog: Annotated[
        Path,
        typer.Argument(help="CSV with a header: title_id,name,video_uri (video: path or s3:// URI)."),
    ],
) -> None:
    """One frame-extraction job per title: sample the video, screen the candidate thumbnails."""
    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.flows import create_title_jobs

    settings = load_settings()
    try:
        rows, problems = parse_catalog(catalog.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read {catalog}: {exc.strerror or exc}") from exc
    except CatalogError as exc:
        raise fail(f"{catalog}: {exc}") from exc
    for problem in problems:
        err.print(f"[yellow]skipped[/yellow] {escape(str(catalog))} {escape(problem)}")
    if not rows:
        raise fail(f"{catalog}: no valid rows to enqueue")
    require_schema(settings)
    created = create_title_jobs(get_sessionmaker(settings.database_url), rows)
    queue_jobs(settings, [(job_id, TaskName.EXTRACT_FRAMES) for job_id in created])
    typer.echo(
        f"queued {len(created)} title job(s): {', '.join(str(j) for j in created)}"
        + (f"; skipped {len(problems)} bad row(s)" if problems else "")
    )


@app.command("submission")
def enqueue_submission(
    uris: Annotated[
        list[str],
        typer.Argument(help="Image files, folders, s3://bucket/key or s3://bucket/prefix/."),
    ],
    vendor: Annotated[str, typer.Option("--vendor", help="Who submitted the artwork.")],
) -> None:
    """One vendor job screening every image named (prefixes and folders are listed by the worker)."""
    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.flows import create_submission_job

    settings = load_settings()
    if not vendor.strip():
        raise fail("--vendor must not be empty")
    require_schema(settings)
    job_id = create_submission_job(get_sessionmaker(settings.database_url), uris, vendor.strip())
    queue_jobs(settings, [(job_id, TaskName.SCREEN_SUBMISSION)])
    typer.echo(f"queued vendor job {job_id} ({len(uris)} source(s) from {vendor.strip()})")
