"""Parameters that record themselves, so every sample can be explained and re-made."""

from __future__ import annotations

from dataclasses import asdict
from typing import ClassVar


class Recorded:
    """Mixin for frozen parameter dataclasses: ``to_dict`` gives ``{"type": name, **fields}``."""

    name: ClassVar[str]

    def to_dict(self) -> dict:
        return {"type": self.name, **asdict(self)}  # type: ignore[call-overload]
