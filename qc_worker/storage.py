"""Where images come from: one small interface over local files (S3 joins it with the job queue).

A source is named by a URI string (a local path now, ``s3://bucket/key`` later) so the
pipeline, the database and the CLI treat every store alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class StorageError(Exception):
    """A source that cannot be listed or read; the message says which and why."""


class LocalStore:
    """Files on this machine. URIs are absolute paths."""

    def list(self, paths: Iterable[str | Path], *, recursive: bool = False) -> list[str]:
        """Image files named by ``paths`` (files as given; folders by image suffix).

        A path that does not exist is an error (a typo should stop the run, not screen
        nothing); a file given explicitly is kept whatever its suffix, so a misnamed image
        is screened and a non-image is recorded as failed rather than silently skipped.
        """
        found: list[str] = []
        for raw in paths:
            path = Path(raw).expanduser()
            if path.is_file():
                found.append(str(path.resolve()))
            elif path.is_dir():
                pattern = "**/*" if recursive else "*"
                found += sorted(
                    str(p.resolve())
                    for p in path.glob(pattern)
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            else:
                raise StorageError(f"no such file or folder: {raw}")
        return list(dict.fromkeys(found))

    def read(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc
