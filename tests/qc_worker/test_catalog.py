"""The catalog CSV of `qc enqueue titles`: bad rows become line-numbered problems, good rows
are kept, and only a file that cannot be a catalog at all (no header, missing columns, not
text) is refused as a whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qc_worker.catalog import CatalogError, parse_catalog

HEADER = "title_id,name,video_uri\n"


def parse(text: str | bytes):
    rows, problems = parse_catalog(text.encode() if isinstance(text, str) else text)
    return [(r.line, r.title_id, r.name, r.video_uri) for r in rows], problems


def test_a_clean_catalog():
    rows, problems = parse(HEADER + "t1,First,s3://b/1.mp4\nt2,,/videos/2.mp4\n")
    assert rows == [(2, "t1", "First", "s3://b/1.mp4"), (3, "t2", None, "/videos/2.mp4")]
    assert problems == []


def test_header_spellings_and_column_order():
    rows, _ = parse("Video URI, Title ,External_ID\ns3://b/1.mp4,First,t1\n")
    assert rows == [(2, "t1", "First", "s3://b/1.mp4")]
    rows, _ = parse("id,uri\nt1,s3://b/1.mp4\n")  # the name column is optional
    assert rows == [(2, "t1", None, "s3://b/1.mp4")]


def test_wrong_field_counts_are_reported_by_line():
    rows, problems = parse(HEADER + "t1,A,s3://b/1.mp4\nt2,only two\nt3,C,s3://b/3.mp4,extra\nt4,D,s3://b/4.mp4\n")
    assert [r[1] for r in rows] == ["t1", "t4"]
    assert problems == ["line 3: 2 fields, the header has 3", "line 4: 4 fields, the header has 3"]


def test_empty_ids_and_uris():
    rows, problems = parse(HEADER + "  ,A,s3://b/1.mp4\nt2,B,   \nt3,C,s3://b/3.mp4\n")
    assert [r[1] for r in rows] == ["t3"]
    assert problems == ["line 2: empty title id", "line 3: empty video URI"]


def test_duplicates_are_reported_and_the_first_is_kept():
    rows, problems = parse(HEADER + "t1,A,s3://b/1.mp4\nt1,A again,s3://b/1.mp4\nt1,A,s3://b/other.mp4\n")
    assert [(r[0], r[3]) for r in rows] == [(2, "s3://b/1.mp4"), (4, "s3://b/other.mp4")]
    assert len(problems) == 1 and problems[0].startswith("line 3: duplicate")


def test_overlong_values():
    rows, problems = parse(HEADER + f"{'x' * 256},A,s3://b/1.mp4\nt2,B,s3://b/{'k' * 2048}\nt3,C,s3://b/3.mp4\n")
    assert [r[1] for r in rows] == ["t3"]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3"]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical():
    rows, problems = parse(HEADER + "\n\nt1,A,s3://b/1.mp4\n   \n,,\nt2,only two\n")
    assert rows == [(4, "t1", "A", "s3://b/1.mp4")]
    assert problems == ["line 7: 2 fields, the header has 3"]


def test_bom_and_crlf():
    rows, problems = parse(b"\xef\xbb\xbftitle_id,name,video_uri\r\nt1,A,s3://b/1.mp4\r\n\r\nt2,B,s3://b/2.mp4\r\n")
    assert rows == [(2, "t1", "A", "s3://b/1.mp4"), (4, "t2", "B", "s3://b/2.mp4")]
    assert problems == []


def test_quoted_fields_with_commas_and_newlines_in_a_name():
    rows, problems = parse(HEADER + 't1,"Smith, John",s3://b/1.mp4\nt2,"Two\nlines",s3://b/2.mp4\nt3,C,s3://b/3.mp4\n')
    assert rows == [
        (2, "t1", "Smith, John", "s3://b/1.mp4"),
        (3, "t2", "Two\nlines", "s3://b/2.mp4"),
        (5, "t3", "C", "s3://b/3.mp4"),
    ]
    assert problems == []


def test_an_unclosed_quote_does_not_swallow_the_rows_after_it():
    rows, problems = parse(
        HEADER + 't1,A,s3://b/1.mp4\nt2,"Unclosed,s3://b/2.mp4\nt3,C,s3://b/3.mp4\nt4,D,s3://b/4.mp4\n'
    )
    assert [r[1] for r in rows] == ["t1", "t3", "t4"]
    assert len(problems) == 1 and problems[0].startswith("line 3:"), problems


def test_an_unclosed_quote_in_the_uri_column_is_not_queued_as_a_uri():
    rows, problems = parse(HEADER + 't1,A,"s3://b/1.mp4\nt2,B,s3://b/2.mp4\n')
    assert [r[1] for r in rows] == ["t2"]
    assert len(problems) == 1 and problems[0].startswith("line 2:"), problems


def test_stray_quotes_inside_a_field_are_kept_literally():
    rows, problems = parse(HEADER + 't1,Na"me,s3://b/1.mp4\n')
    assert rows == [(2, "t1", 'Na"me', "s3://b/1.mp4")] and problems == []


def test_control_characters_are_refused_per_row():
    # PostgreSQL refuses NUL in text, so one such row must not sink the whole enqueue.
    rows, problems = parse(
        HEADER + "t1,A\x00,s3://b/1.mp4\nt\x01,B,s3://b/2.mp4\nt3,C,s3://b/3\x1b.mp4\nt4,D,s3://b/4.mp4\n"
    )
    assert [r[1] for r in rows] == ["t4"]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4"]


def test_non_utf8_rows_are_reported_and_the_rest_kept():
    data = (
        (HEADER + "t1,A,s3://b/1.mp4\n").encode()
        + "t2,Caf\xe9,s3://b/2.mp4\n".encode("latin-1")
        + b"t3,C,s3://b/3.mp4\n"
    )
    rows, problems = parse(data)
    assert [r[1] for r in rows] == ["t1", "t3"]
    assert len(problems) == 1 and problems[0].startswith("line 3:") and "UTF-8" in problems[0]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"\n\n", "header"),
        (b"t1,A,s3://b/1.mp4\n", "lacks column"),  # no header row: the first row is taken as one
        (b"name,video_uri\nA,s3://b/1.mp4\n", "title_id"),
        (b"title_id,name\nt1,A\n", "video_uri"),
        ("title_id,nam\xe9,video_uri\n".encode("latin-1"), "UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "UTF-8|header"),
    ],
)
def test_files_that_are_not_catalogs_are_refused_whole(data, message):
    with pytest.raises(CatalogError, match=message):
        parse_catalog(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_rows_and_problems_or_a_catalog_error(data):
    try:
        rows, problems = parse_catalog(HEADER.encode() + data)
    except CatalogError:
        return
    for row in rows:
        assert row.title_id and row.video_uri and row.line >= 2
        assert not any(ord(c) < 32 or c == "\x7f" for c in row.title_id + row.video_uri)
        assert "\x00" not in (row.name or "")
    for p in problems:
        assert p.startswith("line ")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.text("abc12-", min_size=1, max_size=6), st.text(max_size=8)), max_size=8),
    st.integers(0, 8),
    st.sampled_from(['"bad', 'bad"', 'x,"y', 'x,y,"z', "bad", '"', "x,y,z,w"]),
)
def test_one_bad_line_never_costs_a_later_good_row(good, at, junk):
    """Insert a junk line among unique valid rows: every valid row after it is still kept."""
    lines = [f"id{i}-{t},n,s3://b/{i}.mp4" for i, (t, _) in enumerate(good)]
    at = min(at, len(lines))
    lines.insert(at, junk)
    rows, _ = parse(HEADER + "\n".join(lines) + "\n")
    kept = {r[1] for r in rows}
    assert kept >= {f"id{i}-{t}" for i, (t, _) in enumerate(good)}
