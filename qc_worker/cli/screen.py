"""``qc screen``: screen local files or S3 objects in-process, no servers needed."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from qc_worker.cli.common import err, fail, first_line, load_settings
from qc_worker.vocabulary import OutcomeStatus, RegionKind, Verdict

if TYPE_CHECKING:
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _crop_text(roi: Roi | None) -> str:
    if not roi:
        return "-"
    x0, y0, x1, y1 = roi.bbox
    return f"{x1 - x0}x{y1 - y0}+{x0}+{y0} {'safe' if roi.safe else 'UNSAFE'} ({roi.blur_fraction:.0%} blur)"


def _worst_text(region: Region | None) -> str:
    if not region:
        return "-"
    if region.kind == RegionKind.COMPONENT:
        return f"{region.label} ({region.area_fraction:.1%} of image, p={region.mean_probability:.2f})"
    return f"{region.label} ({region.coverage:.0%} blurred)"


def _skipped_folders(paths: list[str]) -> int:
    """Sub-folders (of the local folders given) that hold images a non-recursive run skips."""
    from qc_worker.storage import IMAGE_SUFFIXES

    count = 0
    for raw in paths:
        folder = Path(raw)
        if "://" in raw or not folder.is_dir():
            continue
        for sub in (d for d in folder.iterdir() if d.is_dir()):
            count += any(f.suffix.lower() in IMAGE_SUFFIXES for f in sub.rglob("*") if f.is_file())
    return count


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
    from sqlalchemy.exc import SQLAlchemyError

    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.db.migrate import upgrade
    from qc_worker.detector.checkpoint import CheckpointError
    from qc_worker.pipeline import Screener, load_detector
    from qc_worker.storage import LocalStore, StorageError, open_store

    settings = load_settings()
    if out is not None and out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file; give a folder for the overlay images")
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(message)s", stream=sys.stderr)
    store = open_store(settings, confine=False)
    try:
        uris = store.list(paths, recursive=recursive)
    except StorageError as exc:
        raise fail(str(exc)) from exc
    if not uris:
        raise fail(
            f"no images found in {', '.join(paths)}" + ("" if recursive else " (use --recursive for sub-folders)")
        )
    if not recursive:
        skipped = _skipped_folders(paths)
        if skipped:
            typer.echo(
                f"note: {skipped} sub-folder(s) with images not screened; use --recursive to include them", err=True
            )
    try:
        upgrade(settings.database_url)  # before the model loads: an unreachable database fails fast
    except SQLAlchemyError as exc:
        raise fail(f"cannot use the database {settings.redacted()['database_url']}: {first_line(exc)}", 1) from exc
    try:
        detector = load_detector(settings, model)
    except (CheckpointError, RuntimeError) as exc:
        raise fail(f"cannot load the detector: {exc}") from exc
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
    counts = {v: sum(o.verdict == v for o in outcomes) for v in Verdict}
    failed = sum(o.status == OutcomeStatus.FAILED for o in outcomes)
    err.print(
        f"screened {len(outcomes) - failed} of {len(outcomes)}: {counts[Verdict.PASS]} pass, "
        f"{counts[Verdict.REVIEW]} review, {counts[Verdict.REJECT]} reject, {failed} failed; "
        f"results in {settings.redacted()['database_url']}" + (f", overlays in {out}" if out else "")
    )


def _print_outcomes(outcomes: list, fmt: Format) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps([o.to_dict() for o in outcomes], indent=2))
        return
    rows = [
        (
            o.uri,
            o.verdict or OutcomeStatus.FAILED,
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
    colour = {Verdict.PASS: "green", Verdict.REVIEW: "yellow", Verdict.REJECT: "red", OutcomeStatus.FAILED: "magenta"}
    for r in rows:
        table.add_row(escape(Path(r[0]).name), f"[{colour[r[1]]}]{r[1]}[/]", *(escape(x) for x in r[2:]))
    Console().print(table)
