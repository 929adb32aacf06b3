"""``qc rescan``: a job re-screening what the model has not screened, on the rescan queue."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from qc_worker.cli.common import fail, load_settings, queue_jobs, require_schema
from qc_worker.vocabulary import TaskName


def rescan(
    since: Annotated[
        datetime | None,
        typer.Option("--since", help="Only images first recorded at or after this date/time (UTC)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Checkpoint whose version must screen (default: QC_MODEL_PATH or the shipped one).",
        ),
    ] = None,
    max_age_days: Annotated[
        int | None,
        typer.Option("--max-age-days", min=1, help="Also re-screen screenings older than this."),
    ] = None,
) -> None:
    """Re-screen every image the model has not screened, in chunks on the low-priority rescan queue."""
    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.detector.checkpoint import CheckpointError, read_meta
    from qc_worker.detector.inference import SHIPPED_CHECKPOINT
    from qc_worker.flows import create_rescan_job

    settings = load_settings()
    path = model or settings.model_path or SHIPPED_CHECKPOINT
    try:
        checksum = read_meta(path).checksum
    except (CheckpointError, OSError) as exc:
        raise fail(f"cannot read the model {path}: {exc}") from exc
    require_schema(settings)
    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    job_id = create_rescan_job(
        get_sessionmaker(settings.database_url),
        checksum,
        since=when,
        max_age_days=max_age_days or settings.rescan_max_age_days,
    )
    queue_jobs(settings, [(job_id, TaskName.PLAN_RESCAN)])
    typer.echo(f"queued rescan job {job_id} for model {checksum[:12]}")
