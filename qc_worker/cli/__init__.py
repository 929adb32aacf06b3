"""The ``qc`` command line: one module per command group, each parsing its arguments and
calling a flow.

``qc screen`` runs in-process with no servers; ``qc enqueue``, ``qc rescan``, ``qc jobs``,
``qc worker`` and ``qc beat`` drive the job queue (Redis + PostgreSQL + S3); ``qc db``
migrates; ``qc report`` writes HTML pages; ``qc config`` shows the effective settings.

Commands import what pulls in OpenCV, the detector or the Celery tasks inside the command,
so ``qc --help``, ``qc jobs`` or ``qc config`` start in a fraction of a second.
"""

from __future__ import annotations

import typer

from qc_worker import __version__
from qc_worker.cli import config, db, enqueue, jobs, report, rescan, screen, services

__all__ = ["app"]

app = typer.Typer(
    name="qc",
    help="Artwork QC: find subtle motion blur in streaming artwork.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Artwork QC: find subtle motion blur in streaming artwork."""


app.command("config")(config.config_command)
app.command()(screen.screen)
app.add_typer(enqueue.app, name="enqueue")
app.command()(rescan.rescan)
app.command("jobs")(jobs.jobs_command)
app.command()(services.worker)
app.command()(services.beat)
app.add_typer(db.app, name="db")
app.add_typer(report.app, name="report")
