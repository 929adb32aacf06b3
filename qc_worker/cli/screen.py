"""``qc screen``: screen local files or S3 objects in-process, no servers needed."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from qc_worker.cli.common import err, fail, first_line, load_settings
from qc_worker.summary import crop_text, csv_header, csv_row, worst_text
from qc_worker.vocabulary import OutcomeStatus, Verdict

if TYPE_CHECKING:
    from qc_worker.config import Settings
    from qc_worker.storage import Store
    from qc_worker.values import Outcome


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


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
    fmt: Annotated[
        str,
        typer.Option("--format", metavar="[table|json|csv]", help="Summary format on standard output."),
    ] = Format.table,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Checkpoint to use (default: QC_MODEL_PATH or the shipped one)."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write the run's self-contained HTML report (as qc report makes) here."),
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

    # --format is a plain string checked here: typer's own choice error is a usage block.
    if fmt not in tuple(Format):
        raise fail(f"--format {fmt!r}: choose one of {', '.join(Format)}")
    settings = load_settings()
    if out is not None and out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file; give a folder for the overlay images")
    if report is not None and report.is_dir():
        raise fail(f"--report {report} is a folder; give the HTML file to write")
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
    _print_outcomes(outcomes, Format(fmt), settings.roi.aspects)
    if report is not None:
        _write_report(settings, store, report, paths, outcomes)
    counts = {v: sum(o.verdict == v for o in outcomes) for v in Verdict}
    failed = sum(o.status == OutcomeStatus.FAILED for o in outcomes)
    err.print(
        f"screened {len(outcomes) - failed} of {len(outcomes)}: {counts[Verdict.PASS]} pass, "
        f"{counts[Verdict.REVIEW]} review, {counts[Verdict.REJECT]} reject, {failed} failed; "
        f"results in {settings.redacted()['database_url']}"
        + (f", overlays in {out}" if out else "")
        + (f", report in {report}" if report else "")
    )


def _print_outcomes(outcomes: list[Outcome], fmt: Format, aspects: Sequence[str]) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps([o.to_dict() for o in outcomes], indent=2))
    elif fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(csv_header(aspects))
        writer.writerows(csv_row(o, aspects) for o in outcomes)
        typer.echo(buf.getvalue(), nl=False)
    else:
        console = Console()
        console.print(summary_table(outcomes, aspects[0], console.width))


_COLOURS = {Verdict.PASS: "green", Verdict.REVIEW: "yellow", Verdict.REJECT: "red", OutcomeStatus.FAILED: "magenta"}


def _cells(o: Outcome, aspect: str) -> list[Text]:
    verdict = o.verdict or OutcomeStatus.FAILED
    return [
        Text(Path(o.uri).name or o.uri),
        Text(verdict, style=_COLOURS[verdict]),
        Text(f"{o.score:.2f}" if o.score is not None else "-"),
        Text(worst_text(o.worst_region)),
        Text(crop_text(o.best_crop(aspect))),
        Text(o.why or "-"),
    ]


def _word_widths(text: Text) -> tuple[int, int]:
    """(longest word, whole text) in cells: a column narrower than its longest word would
    break a number or a file name in the middle."""
    return max((cell_len(w) for w in text.plain.split()), default=1), cell_len(text.plain)


def _fit(least: list[int], most: list[int], room: int) -> list[int]:
    """Column widths between ``least`` and ``most`` that add up to at most ``room``, the
    room left over shared in proportion to what each column still wants."""
    want = [m - lo for lo, m in zip(least, most, strict=True)]
    spare = room - sum(least)
    if spare >= sum(want):
        return list(most)
    return [lo + spare * w // max(sum(want), 1) for lo, w in zip(least, want, strict=True)]


def summary_table(outcomes: Sequence[Outcome], aspect: str, width: int) -> RenderableType:
    """The summary for people, ``width`` columns wide: a table whose columns are never
    narrower than their longest word, so rich wraps between words and never inside a
    number or a file name; when even that does not fit, one block of lines per image."""
    header = ["image", "verdict", "score", "worst region", f"{aspect} crop", "why"]
    rows = [_cells(o, aspect) for o in outcomes]
    measures = [[_word_widths(Text(h))] + [_word_widths(r[i]) for r in rows] for i, h in enumerate(header)]
    least = [max(m[0] for m in col) for col in measures]
    most = [max(m[1] for m in col) for col in measures]
    chrome = 3 * (len(header) - 1)  # a separator and two spaces of padding between columns
    if sum(least) + chrome > width:
        return _blocks(header, rows)
    table = Table(title="Screening results", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, w in zip(header, _fit(least, most, width - chrome), strict=True):
        table.add_column(name, width=w)
    for r in rows:
        table.add_row(*r)
    return table


def _blocks(header: list[str], rows: list[list[Text]]) -> RenderableType:
    """One image per block: its name, then a line per value, for terminals too narrow for the table."""
    lines: list[Text] = []
    for name, *values in rows:
        lines.append(Text.assemble(name, " ", values[0], " ", values[1]))
        lines += [Text.assemble(f"  {h}: ", v) for h, v in zip(header[3:], values[2:], strict=True)]
    return Group(*lines)


def _write_report(settings: Settings, store: Store, path: Path, paths: list[str], outcomes: list[Outcome]) -> None:
    """The run's HTML report (:func:`qc_worker.report.images_report`), from what the database
    now holds for the images just screened."""
    from qc_worker.db.engine import get_sessionmaker
    from qc_worker.report import ReportOptions, images_report

    ids = [o.image_id for o in outcomes if o.image_id is not None]
    facts = [("screened", ", ".join(paths)), ("results", settings.redacted()["database_url"])]
    with get_sessionmaker(settings.database_url)() as session:
        page = images_report(
            session, ids, store, heading="qc screen", facts=facts, options=ReportOptions.from_settings(settings)
        )
    try:
        page.write(path)
    except OSError as exc:
        raise fail(f"cannot write the report {path}: {exc.strerror or exc}", 1) from exc
