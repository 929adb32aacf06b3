"""The catalog CSV of `qc enqueue titles`: title id, name, video URI per row.

Rows are checked one by one and a bad row is reported with its line number and skipped,
so one typo does not stop a catalog of thousands, and nothing is silently dropped.
"""

from __future__ import annotations

import csv
import io
import re
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
    """``(rows, problems)``; each problem names its (first) line.

    A row that is not UTF-8, holds a control character in its id or URI (or a NUL
    anywhere: PostgreSQL refuses it), or has the wrong number of fields is a problem, not
    a reason to refuse the file. An unclosed quote makes the CSV reader join the lines
    after it into one record: when such a multi-line record is bad, only its first line
    is reported and reading goes on from the next line, so the rows after it are kept.
    """
    text = data.decode("utf-8-sig", errors="surrogateescape")
    lines = _Lines(io.StringIO(text, newline="").readlines())
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CatalogError("empty file: expected a header row title_id,name,video_uri") from None
    except csv.Error as exc:
        raise CatalogError(f"cannot parse the header: {exc}") from exc
    if _NOT_UTF8.search("".join(header)):
        raise CatalogError("not UTF-8 text: the header row holds bytes that are not UTF-8")
    if not any(header):
        raise CatalogError("empty header row: expected title_id,name,video_uri")
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
        line = lines.pos + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if not any(cell.strip() for cell in record):
            continue
        problem = _problem(record, header, where)
        if problem is None:
            title_id = record[where["title_id"]].strip()
            uri = record[where["video_uri"]].strip()
            name = record[where["name"]].strip() if "name" in where else None
            if (title_id, uri) in seen:
                problem = f"duplicate of an earlier row ({title_id}, {uri})"
            else:
                seen.add((title_id, uri))
                rows.append(CatalogRow(line, title_id, name or None, uri))
                continue
        if lines.pos > line:  # a bad record over several lines: an unclosed quote, most likely
            problem += f" (the record runs to line {lines.pos}: an unclosed quote?)"
            lines.pos = line  # read on from the line after its first
        problems.append(f"line {line}: {problem}")
    return rows, problems


#: Bytes that were not UTF-8, as ``surrogateescape`` decodes them.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _problem(record: list[str], header: list[str], where: dict[str, int]) -> str | None:
    if len(record) != len(header):
        return f"{len(record)} fields, the header has {len(header)}"
    if any(_NOT_UTF8.search(cell) for cell in record):
        return "not UTF-8 text"
    if any("\x00" in cell for cell in record):
        return "NUL character in a field"
    title_id = record[where["title_id"]].strip()
    uri = record[where["video_uri"]].strip()
    if not title_id:
        return "empty title id"
    if not uri:
        return "empty video URI"
    if len(title_id) > 255 or len(uri) > 2048:
        return "title id or video URI too long"
    if _CONTROL.search(title_id) or _CONTROL.search(uri):
        return "control character (or line break) in the title id or video URI"
    return None


class _Lines:
    """The file's physical lines for the CSV reader, with a position that can be moved
    back (the reader keeps no state between records, so it simply reads on from there)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]
