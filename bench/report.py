"""BENCHMARKS.md sections: each benchmark owns one, replaced in place on every run."""

from __future__ import annotations

import re
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(script: str, title: str, how: str, body: str) -> None:
    """Replace (or append) the section of ``script`` with a dated ``body``."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    section = (
        f"<!-- {script} -->\n## {title} (`{script}`)\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} with {how}.\n\n{body}\n<!-- /{script} -->"
    )
    pattern = re.compile(rf"<!-- {re.escape(script)} -->.*?<!-- /{re.escape(script)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS.write_text(text)
