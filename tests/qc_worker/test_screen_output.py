"""What ``qc screen`` prints: the table at 80 columns, CSV columns, JSON crops, the
``--format`` error. Outcomes are made by hand: no model runs here."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from qc_worker.cli import app
from qc_worker.cli.screen import summary_table
from qc_worker.detector.regions import Region
from qc_worker.detector.roi import Roi
from qc_worker.summary import crop_json, csv_header, csv_row
from qc_worker.values import Outcome

ASPECTS = ("16:9", "4:3", "1:1", "2:3")


def _roi(aspect: str, bbox: list[int], safe: bool, reason: str | None = None, blur: float = 0.0) -> Roi:
    keeps_faces = reason is None or "faces" not in reason
    return Roi(aspect, tuple(bbox), blur, safe, 0.5, keeps_faces, reason)


def _region(kind: str, label: str, coverage: float, area: float, p: float) -> Region:
    return Region(kind, label, (0, 0, 10, 10), area, coverage, p, 0.3, "blurred")


def outcomes() -> list[Outcome]:
    return [
        Outcome(
            "samples/images/portrait_A000069.jpg",
            "screened",
            verdict="reject",
            score=1.0,
            worst_region=_region("face", "face_0", 0.3214, 0.08, 0.71),
            rois=[
                _roi("16:9", [0, 14, 225, 141], False, "faces do not fit 16:9"),
                _roi("4:3", [0, 0, 225, 169], False, "blur 5.04% > 5%", 0.0504),
                _roi("1:1", [0, 25, 225, 250], True),
            ],
            reasons=("face_0 blurred 32% >= 15%", "foreground blurred 49% >= 30%"),
        ),
        Outcome(
            "/data/artwork/season_02/rocket_launch_night.jpg",
            "screened",
            verdict="review",
            score=0.4167,
            worst_region=_region("component", "component_0", 1.0, 0.1234, 0.8123),
            rois=[_roi("16:9", [160, 14, 400, 149], True, blur=0.01)],
            reasons=("component_0 (12.3% of image) mean probability 0.81 >= 0.70",),
        ),
        Outcome("/data/artwork/coffee.jpg", "screened", verdict="pass", score=0.0312, rois=[]),
        Outcome("/data/artwork/truncated.jpg", "failed", reason="cannot decode image: truncated JPEG data"),
    ]


def _render(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def _values(o: Outcome) -> list[str]:
    from qc_worker.cli.screen import _cells

    return [cell.plain for cell in _cells(o, "16:9")]


@pytest.mark.parametrize("width", [80, 120])
def test_the_table_keeps_every_value_whole(width):
    rows = outcomes()
    text = _render(summary_table(rows, "16:9", width), width)
    assert max(len(line) for line in text.splitlines()) <= width, text
    words = {w for line in text.splitlines() for w in line.split()}
    for o in rows:
        for value in _values(o):
            for word in value.split():
                assert word in words, f"{word!r} of {value!r} is broken:\n{text}"
    assert "│" not in text  # a light table: no vertical rules eating the width


def test_the_table_says_which_rule_fired_and_why_a_crop_is_unsafe():
    text = " ".join(_render(summary_table(outcomes(), "16:9", 250), 250).split())  # no cell wraps
    assert "face_0 blurred 32% >= 15%" in text
    assert "225x127 at 0,14 unsafe: faces do not fit 16:9" in text
    assert "240x135 at 160,14 safe" in text
    assert "component_0 12.3% of image p=0.81" in text
    assert "cannot decode image: truncated JPEG data" in text


def test_a_name_too_long_for_the_table_gets_a_block_of_its_own():
    rows = outcomes()
    rows[2].uri = "/data/" + "very_long_artwork_file_name_" * 2 + "coffee.jpg"
    text = _render(summary_table(rows, "16:9", 80), 80)
    assert rows[2].uri.rsplit("/", 1)[1] in text
    assert "  why: face_0 blurred 32% >= 15%;" in text
    words = {w for line in text.splitlines() for w in line.split()}
    assert {"240x135", "160,14", "component_0", "12.3%", "p=0.81"} <= words


def test_csv_columns_parse_as_numbers():
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(csv_header(ASPECTS))
    writer.writerows(csv_row(o, ASPECTS) for o in outcomes())
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["verdict"] for r in rows] == ["reject", "review", "pass", ""]
    portrait, rocket, coffee, failed = rows
    assert float(portrait["score"]) == 1.0 and float(rocket["score"]) == pytest.approx(0.4167)
    assert (portrait["worst_kind"], portrait["worst_label"]) == ("face", "face_0")
    assert float(portrait["worst_share"]) == pytest.approx(0.3214)
    assert float(rocket["worst_area"]) == pytest.approx(0.1234)
    assert float(rocket["worst_probability"]) == pytest.approx(0.8123)
    box = [int(portrait[f"crop_16_9_{k}"]) for k in "xywh"]
    assert box == [0, 14, 225, 127]
    assert portrait["crop_16_9_safe"] == "false" and portrait["crop_16_9_reason"] == "faces do not fit 16:9"
    assert portrait["crop_4_3_reason"] == "blur 5.04% > 5%"
    assert portrait["crop_1_1_safe"] == "true" and portrait["crop_1_1_reason"] == ""
    assert portrait["crop_2_3_x"] == ""  # no crop of that aspect
    assert portrait["reason"] == "face_0 blurred 32% >= 15%; foreground blurred 49% >= 30%"
    assert failed["status"] == "failed" and failed["reason"].startswith("cannot decode")
    assert coffee["worst_kind"] == "" and float(coffee["score"]) == pytest.approx(0.0312)


def test_json_crops_use_the_same_x_y_w_h():
    crop = crop_json(_roi("16:9", [160, 14, 400, 149], True))
    assert (crop["x"], crop["y"], crop["w"], crop["h"]) == (160, 14, 240, 135) and "bbox" not in crop
    data = json.loads(json.dumps(outcomes()[0].to_dict()))
    assert data["rois"][0]["w"] == 225 and data["rois"][0]["reason"] == "faces do not fit 16:9"


def test_an_unknown_format_is_one_line_naming_the_choices(tmp_path):
    result = CliRunner().invoke(app, ["screen", str(tmp_path), "--format", "nonsense"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --format 'nonsense': choose one of table, json, csv"
