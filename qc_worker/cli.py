"""The ``qc`` command line.

``qc screen`` runs in-process with no servers; ``qc enqueue``, ``qc rescan``, ``qc jobs``,
``qc worker`` and ``qc beat`` drive the job queue (Redis + PostgreSQL + S3); ``qc db``
migrates; ``qc config`` shows the effective settings.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qc_worker import __version__
from qc_worker.config import Settings, format_validation_error, get_settings
from qc_worker.vocabulary import JobKind, OutcomeStatus, TaskName

app = typer.Typer(
    name="qc",
    help="Artwork QC: find subtle motion blur in streaming artwork.",
    no_args_is_help=True,
    add_completion=False,
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


def _load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as err:
        typer.echo(format_validation_error(err), err=True)
        raise typer.Exit(code=2) from None


@app.command("config")
def config_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective settings (environment QC_*, then .env, then defaults); secrets masked."""
    settings = _load_settings()
    values = settings.redacted()
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True))
        return
    table = Table(title="Effective settings (secrets masked)")
    table.add_column("setting", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("environment variable", style="dim", no_wrap=True)
    for name in Settings.model_fields:
        value = values[name]
        # Nested sections (faces, regions, roi) get one row per field: QC_REGIONS__FIELD.
        rows = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in rows:
            label = name if sub is None else f"{name}.{sub}"
            env = Settings.env_name(name) + ("" if sub is None else f"__{sub.upper()}")
            shown = "[dim](unset)[/dim]" if v is None else escape(str(v))
            table.add_row(label, shown, env)
    Console().print(table)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _crop_text(roi: dict | None) -> str:
    if not roi:
        return "-"
    x0, y0, x1, y1 = roi["bbox"]
    return f"{x1 - x0}x{y1 - y0}+{x0}+{y0} {'safe' if roi['safe'] else 'UNSAFE'} ({roi['blur_fraction']:.0%} blur)"


def _worst_text(region: dict | None) -> str:
    if not region:
        return "-"
    if region["kind"] == "component":
        return f"{region['label']} ({region['area_fraction']:.1%} of image, p={region['mean_probability']:.2f})"
    return f"{region['label']} ({region['coverage']:.0%} blurred)"


@app.command()
def screen(
    paths: Annotated[
        list[str],
        typer.Argument(help="Image files and folders, or s3://bucket/key and s3://bucket/prefix/, to screen."),
    ],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write overlay images (JPEG: heat map, regions, crops) here."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Summary format on standard output.")] = Format.table,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Checkpoint to use (default: QC_MODEL_PATH or the shipped one)."),
    ] = None,
) -> None:
    """Screen images in-process: verdicts, blurred regions and crop-safe ROIs, stored in the database.

    Exits 0 when the run completed, whatever the verdicts; images that cannot be read are
    reported and recorded as failed, and the rest still screen.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.db.migrate import upgrade
    from qc_worker.detector.checkpoint import CheckpointError
    from qc_worker.pipeline import Screener, load_detector
    from qc_worker.storage import LocalStore, StorageError, open_store

    settings = _load_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(message)s", stream=sys.stderr)
    err = Console(stderr=True)
    store = open_store(settings, confine=False)
    try:
        uris = store.list(paths, recursive=recursive)
    except StorageError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if not uris:
        err.print(
            f"[red]error:[/red] no images found in {', '.join(paths)}"
            + ("" if recursive else " (use --recursive for sub-folders)")
        )
        raise typer.Exit(2)
    try:
        detector = load_detector(settings, model)
    except (CheckpointError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] cannot load the detector: {exc}")
        raise typer.Exit(2) from exc
    upgrade(settings.database_url)
    screener = Screener(
        settings,
        detector,
        get_sessionmaker(settings.database_url),
        store=store,
        overlay_store=LocalStore(out) if out else None,
    )
    outcomes = []
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("screening", total=len(uris))
        for outcome in screener.screen(uris, progress=lambda o: bar.advance(task)):
            outcomes.append(outcome)
    _print_outcomes(outcomes, fmt)
    counts = {k: sum(o.verdict == k for o in outcomes) for k in ("pass", "review", "reject")}
    failed = sum(o.status == OutcomeStatus.FAILED for o in outcomes)
    err.print(
        f"screened {len(outcomes) - failed} of {len(outcomes)}: {counts['pass']} pass, {counts['review']} review, "
        f"{counts['reject']} reject, {failed} failed; results in {settings.redacted()['database_url']}"
        + (f", overlays in {out}" if out else "")
    )


def _print_outcomes(outcomes: list, fmt: Format) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps([o.to_dict() for o in outcomes], indent=2))
        return
    rows = [
        (
            o.uri,
            o.verdict or "failed",
            f"{o.score:.2f}" if o.score is not None else "",
            _worst_text(o.worst_region),
            _crop_text(o.best_crop("16:9")),
            o.reason or "",
        )
        for o in outcomes
    ]
    header = ("image", "verdict", "score", "worst region", "best 16:9 crop", "reason")
    if fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(rows)
        typer.echo(buf.getvalue(), nl=False)
        return
    table = Table(title="Screening results")
    for h in header:
        table.add_column(h, overflow="fold")
    colour = {"pass": "green", "review": "yellow", "reject": "red", "failed": "magenta"}
    for r in rows:
        table.add_row(escape(Path(r[0]).name), f"[{colour[r[1]]}]{r[1]}[/]", *(escape(x) for x in r[2:]))
    Console().print(table)


# --- the job queue ------------------------------------------------------------------------
enqueue_app = typer.Typer(help="Queue work for the workers: catalog titles, vendor submissions.", no_args_is_help=True)
app.add_typer(enqueue_app, name="enqueue")


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _queue_jobs(settings: Settings, jobs_to_send: list[tuple[int, str]]) -> None:
    """Send one task per new job; a job whose task cannot be queued is marked failed with
    the reason (its row says so; nothing waits forever for a message that never left)."""
    from qc_worker import jobs
    from qc_worker.celery_app import make_celery
    from qc_worker.db.engine import get_sessionmaker

    celery = make_celery(settings)
    sessions = get_sessionmaker(settings.database_url)
    try:
        for job_id, task in jobs_to_send:
            celery.send_task(
                task,
                args=[job_id],
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.5},
            )
    except Exception as exc:  # kombu raises several types for an unreachable broker
        sent = [j for j, _ in jobs_to_send[: jobs_to_send.index((job_id, task))]]
        with sessions.begin() as s:
            for j, _ in jobs_to_send:
                if j not in sent:
                    jobs.fail_job(s, j, f"could not queue the job: {type(exc).__name__}: {exc}")
        raise _fail(
            f"cannot reach the job queue at {settings.redacted()['redis_url']}: {exc}; "
            f"{len(jobs_to_send) - len(sent)} job(s) marked failed",
            1,
        ) from exc
    finally:
        celery.close()


def _require_schema(settings: Settings) -> None:
    from qc_worker.db.migrate import current, head

    try:
        revision = current(settings.database_url)
    except Exception as exc:
        raise _fail(f"cannot reach the database {settings.redacted()['database_url']}: {exc}", 1) from exc
    if revision != head():
        raise _fail(f"the database is at revision {revision or 'none'}, not {head()}: run `qc db upgrade` first")


@enqueue_app.command("titles")
def enqueue_titles(
    catalog: Annotated[
        Path,
        typer.Argument(help="CSV with a header: title_id,name,video_uri (video: path or s3:// URI)."),
    ],
) -> None:
    """One frame-extraction job per title: sample the video, screen the candidate thumbnails."""
    from qc_worker import jobs
    from qc_worker.catalog import CatalogError, parse_catalog
    from qc_worker.db.engine import get_sessionmaker

    settings = _load_settings()
    try:
        rows, problems = parse_catalog(catalog.read_bytes())
    except OSError as exc:
        raise _fail(f"cannot read {catalog}: {exc.strerror or exc}") from exc
    except CatalogError as exc:
        raise _fail(f"{catalog}: {exc}") from exc
    err = Console(stderr=True)
    for problem in problems:
        err.print(f"[yellow]skipped[/yellow] {escape(str(catalog))} {escape(problem)}")
    if not rows:
        raise _fail(f"{catalog}: no valid rows to enqueue")
    _require_schema(settings)
    created: list[tuple[int, str]] = []
    with get_sessionmaker(settings.database_url).begin() as s:
        for row in rows:
            title = jobs.upsert_title(s, row.title_id, row.name)
            job = jobs.create_job(
                s,
                JobKind.FRAMES,
                {"video_uri": row.video_uri, "catalog_line": row.line},
                title_id=title.id,
            )
            created.append((job.id, TaskName.EXTRACT_FRAMES))
    _queue_jobs(settings, created)
    typer.echo(
        f"queued {len(created)} title job(s): {', '.join(str(j) for j, _ in created)}"
        + (f"; skipped {len(problems)} bad row(s)" if problems else "")
    )


@enqueue_app.command("submission")
def enqueue_submission(
    uris: Annotated[
        list[str],
        typer.Argument(help="Image files, folders, s3://bucket/key or s3://bucket/prefix/."),
    ],
    vendor: Annotated[str, typer.Option("--vendor", help="Who submitted the artwork.")],
) -> None:
    """One vendor job screening every image named (prefixes and folders are listed by the worker)."""
    from qc_worker import jobs
    from qc_worker.db.engine import get_sessionmaker

    settings = _load_settings()
    if not vendor.strip():
        raise _fail("--vendor must not be empty")
    _require_schema(settings)
    with get_sessionmaker(settings.database_url).begin() as s:
        job_id = jobs.create_job(s, JobKind.VENDOR, {"uris": list(uris), "vendor": vendor.strip()}).id
    _queue_jobs(settings, [(job_id, TaskName.SCREEN_SUBMISSION)])
    typer.echo(f"queued vendor job {job_id} ({len(uris)} source(s) from {vendor.strip()})")


@app.command()
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

    settings = _load_settings()
    path = model or settings.model_path or SHIPPED_CHECKPOINT
    try:
        checksum = read_meta(path).checksum
    except (CheckpointError, OSError) as exc:
        raise _fail(f"cannot read the model {path}: {exc}") from exc
    _require_schema(settings)
    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    job_id = create_rescan_job(
        get_sessionmaker(settings.database_url),
        checksum,
        since=when,
        max_age_days=max_age_days or settings.rescan_max_age_days,
    )
    _queue_jobs(settings, [(job_id, TaskName.PLAN_RESCAN)])
    typer.echo(f"queued rescan job {job_id} for model {checksum[:12]}")


@app.command("jobs")
def jobs_command(
    job_id: Annotated[int | None, typer.Argument(help="One job's details (default: the latest jobs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many recent jobs to list.")] = 50,
) -> None:
    """Status and counts of jobs: queued, running, done, failed or partially failed."""
    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.jobs import job_summary

    settings = _load_settings()
    _require_schema(settings)
    with get_sessionmaker(settings.database_url).begin() as s:
        rows = job_summary(s, job_id, limit)
    if job_id is not None and not rows:
        raise _fail(f"no job {job_id}")
    if as_json:
        typer.echo(json.dumps(rows if job_id is None else rows[0], indent=2))
        return
    table = Table(title="Jobs")
    for h in ("id", "kind", "status", "screened", "failed", "pending", "total", "error"):
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(
            *(
                escape(str(r[k] if r[k] is not None else ""))
                for k in ("id", "kind", "status", "screened", "failed", "pending", "total", "error")
            )
        )
    Console().print(table)
    if job_id is not None and rows[0]["failures"]:
        for f in rows[0]["failures"]:
            typer.echo(f"failed {f['uri']}: {f['reason']}")


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Queues to serve, highest priority first.")
    ] = "frames,vendor,screen,rescan",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Worker processes (1 per GPU).")] = 1,
    pool: Annotated[str, typer.Option("--pool", help="prefork (default), solo or threads.")] = "prefork",
) -> None:
    """A Celery worker: loads the model once per process and serves the queues in order."""
    from qc_worker.celery_app import QUEUES

    settings = _load_settings()
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown or not wanted:
        raise _fail(f"unknown queue(s) {unknown or queues!r}; choose from {', '.join(QUEUES)}")
    if pool not in ("prefork", "solo", "threads"):
        raise _fail(f"unknown pool {pool!r}; choose prefork, solo or threads")
    import tempfile

    from qc_worker import metrics
    from qc_worker.tasks import app as celery

    if settings.metrics_port is not None:
        # Before the pool forks: children then write their metrics where the parent serves them.
        metrics.prepare_multiprocess(Path(tempfile.mkdtemp(prefix="qc-metrics-")))
        metrics.start_metrics_server(settings)
    celery.worker_main(
        [
            "worker",
            f"--queues={','.join(wanted)}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=qc-{os.getpid()}@%h",
        ]
    )


@app.command()
def beat() -> None:
    """Celery beat: queues the nightly rescan at QC_RESCAN_AT (UTC)."""
    settings = _load_settings()
    from qc_worker.tasks import app as celery

    celery.start(["beat", f"--schedule={settings.beat_schedule_path}", f"--loglevel={settings.log_level}"])


db_app = typer.Typer(help="Database schema: upgrade, downgrade, current revision.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the configured database (QC_DATABASE_URL) up to REVISION."""
    from qc_worker.db.migrate import current, upgrade

    settings = _load_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {current(settings.database_url) or 'none'}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops every table).")] = "-1",
) -> None:
    """Migrate the configured database down to REVISION (default: one step)."""
    from qc_worker.db.migrate import current, downgrade

    settings = _load_settings()
    downgrade(settings.database_url, revision)
    typer.echo(f"database at {current(settings.database_url) or 'none (no tables)'}")


@db_app.command("current")
def db_current() -> None:
    """Print the configured database's revision (or 'none')."""
    from qc_worker.db.migrate import current

    settings = _load_settings()
    typer.echo(current(settings.database_url) or "none")


report_app = typer.Typer(
    help="Self-contained HTML pages of screening results: one title or one job.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


class TitleKeyKind(StrEnum):
    auto = "auto"
    id = "id"
    external = "external"


def _write_report(kind: str, key: str, out: Path | None, build) -> None:
    """Build a report with ``build(session, store, options)`` and write it to ``out``."""
    import re

    from sqlalchemy.exc import SQLAlchemyError

    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.report import ReportError, ReportOptions, open_report_store

    settings = _load_settings()
    err = Console(stderr=True)
    path = out or Path(f"report-{kind}-{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.html")
    try:
        with get_sessionmaker(settings.database_url)() as session:
            report = build(session, open_report_store(settings), ReportOptions.from_settings(settings))
    except ReportError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        err.print(
            f"[red]error:[/red] cannot read the results database {escape(settings.redacted()['database_url'])}: "
            f"{escape(first)} (is it migrated? `qc db upgrade`)"
        )
        raise typer.Exit(2) from exc
    report.write(path)
    typer.echo(f"wrote {path} ({report.subject}: {report.counts['images']} images; {report.counts_text() or 'none'})")


@report_app.command("title")
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


@report_app.command("job")
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


if __name__ == "__main__":  # pragma: no cover
    app()
