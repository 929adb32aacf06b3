"""CI runs every test: tests marked ``slow`` or ``integration`` are kept out of a quick local
run by choice (``-m "not slow and not integration"``), never out of ``make test``."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_test_and_ci_deselect_no_marker():
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert not re.search(r"(^|\s)-[mk]\b", pytest_options["addopts"]), pytest_options["addopts"]
    assert {"slow", "integration"} <= {m.split(":")[0] for m in pytest_options["markers"]}
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PYTEST_ARGS \?=\s*$", makefile, re.M), "make test must select every test by default"
    assert "-m pytest $(PYTEST_ARGS)" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test \|\| rc=\$\?$", ci, re.M), "CI must run make test as it is"
    assert "PYTEST_ARGS" not in ci
