"""``qc report title|job``: one self-contained HTML page of screening results."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from qc_worker.cli.common import fail, first_line, load_settings

app = typer.Typer(
    help="Self-contained HTML pages of screening results: one title or one job.",
    no_args_is_help=True,
)


class TitleKeyKind(StrEnum):
    auto = "auto"
    id = "id"
    external = "external"


def _write_report(kind: str, key: str, out: Path | None, build) -> None:
    """Build a report with ``build(session, store, options)`` and write it to ``out``."""
    from sqlalchemy.exc import SQLAlchemyError

    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.report import ReportError, ReportOptions, open_report_store

    settings = load_settings()
    path = out or Path(f"report-{kind}-{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.html")
    try:
        with get_sessionmaker(settings.database_url)() as session:
            report = build(session, open_report_store(settings), ReportOptions.from_settings(settings))
    except ReportError as exc:
        raise fail(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise fail(
            f"cannot read the results database {settings.redacted()['database_url']}: "
            f"{first_line(exc)} (is it migrated? `qc db upgrade`)"
        ) from exc
    report.write(path)
    typer.echo(f"wrote {path} ({report.subject}: {report.counts['images']} images; {report.counts_text() or 'none'})")


@app.command("title")
def report_title(
    title: Annotated[
        str,
        typer.Argument(help="The title: its id (titles.id) or its catalog external id (titles.external_id)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the page (default: report-title-TITLE.html)."),
    ] = None,
    by: Annotated[
        TitleKeyKind,
        typer.Option(
            "--by",
            help="Read TITLE as an id, an external id, or either (auto; ambiguity is an error).",
        ),
    ] = TitleKeyKind.auto,
) -> None:
    """Write one HTML page showing every image of a title: overlay, verdict, crops, timestamps."""
    from qc_worker.report import title_report

    _write_report(
        "title",
        title,
        out,
        lambda s, store, opts: title_report(s, title, store, by=by.value, options=opts),
    )


@app.command("job")
def report_job(
    job: Annotated[int, typer.Argument(help="The job's id (jobs.id).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the page (default: report-job-JOB.html)."),
    ] = None,
) -> None:
    """Write one HTML page showing every image of a job: overlay, verdict, crops, failures."""
    from qc_worker.report import job_report

    _write_report("job", str(job), out, lambda s, store, opts: job_report(s, job, store, options=opts))
