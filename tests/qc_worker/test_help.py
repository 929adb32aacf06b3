"""``--help`` of every ``qc`` and ``qc-train`` command, as a person reads it at 80 columns:
plain flags without a type, types in the usual words (``PATH``, ``TEXT``, ``[a|b]``, not
``<bool>`` or ``<list[Path]>``), and descriptions wrapped between sentences' words only
where the line is full (not where the docstring's source line ended)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from model_training.cli import app as train_app
from qc_worker.cli import app as qc_app

runner = CliRunner()
WIDTH = 80
#: click's help formatter wraps two columns short of the terminal.
WRAP = WIDTH - 2


def _commands(app: typer.Typer) -> list[list[str]]:
    found: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


CASES = [("qc", qc_app, path) for path in _commands(qc_app)] + [
    ("qc-train", train_app, path) for path in _commands(train_app)
]


def _help(app: typer.Typer, prog: str, path: list[str]) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, prog_name=prog)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_covered():
    names = {" ".join([prog, *path]) for prog, _, path in CASES}
    assert {"qc screen", "qc report title", "qc db upgrade", "qc-train fit", "qc-train synth"} <= names


@pytest.mark.parametrize(("prog", "app", "path"), CASES, ids=[" ".join([p, *c]) for p, _, c in CASES])
def test_help_reads_plainly_at_80_columns(prog, app, path):
    text = _help(app, prog, path)
    assert "<bool>" not in text and "list[" not in text, text
    assert not re.search(r"<(str|int|path|float)>", text), text
    usage = text.splitlines()[0]
    assert "{" not in usage, usage
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    # The description (lines indented by two spaces before the first section) wraps only
    # where the next word would not fit: a short line followed by more of the same
    # paragraph is a sentence broken where its source line ended.
    lines = text.splitlines()
    section = next((i for i, line in enumerate(lines) if re.match(r"^(Arguments|Options|Commands):", line)), len(lines))
    prose = lines[1:section]
    for a, b in zip(prose, prose[1:], strict=False):
        if a.strip() and b.strip():
            assert len(a) + 1 + len(b.split()[0]) > WRAP, f"broken after {a!r}:\n{text}"


def test_screen_help_names_its_types_and_choices():
    text = _help(qc_app, "qc", ["screen"])
    assert "PATHS..." in text and "--out PATH" in text and "[table|json|csv]" in text
    assert re.search(r"-r, --recursive +Descend", text), text
