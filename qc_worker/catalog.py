"""The catalog CSV of `qc enqueue titles`: title id, name, video URI per row.

Rows are checked one by one and a bad row is reported with its line number and skipped,
so one typo does not stop a catalog of thousands, and nothing is silently dropped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

#: Accepted spellings of each column (first row is the header).
COLUMNS = {
    "title_id": ("title_id", "title id", "id", "external_id"),
    "name": ("name", "title", "title_name"),
    "video_uri": ("video_uri", "video uri", "video", "uri"),
}


@dataclass(frozen=True)
class CatalogRow:
    line: int
    title_id: str
    name: str | None
    video_uri: str


class CatalogError(ValueError):
    """The file as a whole cannot be read (no header, missing columns, not text)."""


def parse_catalog(data: bytes) -> tuple[list[CatalogRow], list[str]]:
    """``(rows, problems)``; each problem names its line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"not UTF-8 text: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CatalogError("empty file: expected a header row title_id,name,video_uri") from None
    except csv.Error as exc:
        raise CatalogError(f"cannot parse the header: {exc}") from exc
    where: dict[str, int] = {}
    for column, names in COLUMNS.items():
        found = [i for i, h in enumerate(header) if h in names]
        if found:
            where[column] = found[0]
    missing = [c for c in ("title_id", "video_uri") if c not in where]
    if missing:
        raise CatalogError(f"header {header} lacks column(s) {missing}; expected title_id,name,video_uri")
    rows: list[CatalogRow] = []
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {reader.line_num}: {exc}")
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            problems.append(f"line {line}: {len(record)} fields, the header has {len(header)}")
            continue
        title_id = record[where["title_id"]].strip()
        uri = record[where["video_uri"]].strip()
        name = record[where["name"]].strip() if "name" in where else None
        if not title_id:
            problems.append(f"line {line}: empty title id")
        elif not uri:
            problems.append(f"line {line}: empty video URI")
        elif len(title_id) > 255 or len(uri) > 2048:
            problems.append(f"line {line}: title id or video URI too long")
        elif (title_id, uri) in seen:
            problems.append(f"line {line}: duplicate of an earlier row ({title_id}, {uri})")
        else:
            seen.add((title_id, uri))
            rows.append(CatalogRow(line, title_id, name or None, uri))
    return rows, problems
