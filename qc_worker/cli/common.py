"""What every command shares: settings, one-line errors, the schema check, sending jobs."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from qc_worker.config import Settings, format_validation_error, get_settings
from qc_worker.vocabulary import TaskName

__all__ = ["err", "fail", "first_line", "load_settings", "queue_jobs", "require_schema"]

#: Standard error, where progress, warnings and errors go (standard output is for results).
err = Console(stderr=True)


def load_settings() -> Settings:
    """The settings, or exit 2 with what is wrong with them."""
    try:
        return get_settings()
    except ValidationError as exc:
        typer.echo(format_validation_error(exc), err=True)
        raise typer.Exit(code=2) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on standard error, one line however long (rich would wrap
    it at the terminal's width); raise the returned Exit."""
    typer.secho("error:", fg=typer.colors.RED, err=True, nl=False)
    typer.echo(f" {message}", err=True)
    return typer.Exit(code)


def first_line(exc: BaseException) -> str:
    """The first line of a database error: the driver's own message, without SQLAlchemy's
    statement, parameters and background link."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_schema(settings: Settings) -> None:
    """Exit 1 when the database cannot be reached, 2 when it is not at the code's revision."""
    from qc_worker.db.migrate import current, head

    try:
        revision = current(settings.database_url)
    except Exception as exc:
        raise fail(f"cannot reach the database {settings.redacted()['database_url']}: {first_line(exc)}", 1) from exc
    if revision != head():
        raise fail(f"the database is at revision {revision or 'none'}, not {head()}: run `qc db upgrade` first")


def queue_jobs(settings: Settings, to_send: list[tuple[int, TaskName]]) -> None:
    """Send one task per new job (:func:`qc_worker.flows.queue_jobs`); exit 1 when the
    broker is unreachable, saying how many jobs were marked failed."""
    from qc_worker import flows
    from qc_worker.celery_app import make_celery
    from qc_worker.db.engine import get_sessionmaker

    celery = make_celery(settings)
    send = lambda task, job_id: celery.send_task(
        task, args=[job_id], retry=True, retry_policy={"max_retries": 3, "interval_start": 0.5}
    )
    try:
        flows.queue_jobs(get_sessionmaker(settings.database_url), to_send, send)
    except flows.QueueUnreachable as exc:
        raise fail(
            f"cannot reach the job queue at {settings.redacted()['redis_url']}: {exc}; "
            f"{exc.failed} job(s) marked failed",
            1,
        ) from exc
    finally:
        celery.close()
