"""docs/deploy.md stays true: its qc commands parse as commands of the real CLI, its QC_
names are Settings fields, and the services it lists are the compose file's."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.infra.infra_files import (
    QC_NAME,
    ROOT,
    load_compose,
    qc_command_problem,
    settings_env_problem,
)

DOC = ROOT / "docs" / "deploy.md"
SHELL_OPERATORS = {";", "&&", "||", "|", ">", "<", ">>", "&"}


def _code_lines() -> list[str]:
    """Lines of the fenced code blocks, ``\\`` continuations joined."""
    lines: list[str] = []
    inside = False
    pending = ""
    for raw in DOC.read_text(encoding="utf-8").splitlines():
        if raw.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines


def _qc_commands() -> list[list[str]]:
    commands = []
    for line in _code_lines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token == "qc":
                cmd = []
                for word in tokens[i:]:
                    if word in SHELL_OPERATORS:
                        break
                    cmd.append(word)
                commands.append(cmd)
    return commands


COMMANDS = _qc_commands()


def test_the_doc_has_qc_commands() -> None:
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_doc_qc_commands_are_real(argv: list[str]) -> None:
    problem = qc_command_problem(argv)
    assert problem is None, f"docs/deploy.md: {problem}"


def test_doc_qc_names_are_settings_fields() -> None:
    names = sorted(set(QC_NAME.findall(DOC.read_text(encoding="utf-8"))))
    problems = [p for p in map(settings_env_problem, names) if p]
    assert not problems, "\n".join(problems)


def test_doc_lists_the_compose_services() -> None:
    table = re.findall(r"^\| `([a-z-]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert set(table) == set(load_compose()["services"])
