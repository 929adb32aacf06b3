"""Logging of every qc process: text for people or JSON lines for log collectors, on stderr.

:func:`configure_logging` installs one handler on the root logger (calling it again
replaces that handler, so Celery's ``setup_logging`` signal and the CLI may both call it).
Records logged inside :func:`log_context` carry its ids (``job_id``, ``image_id``,
``task_id`` ...): as fields of the JSON object, or as ``key=value`` after a text message.

No configured secret reaches the output: the handler masks every value of the settings'
secrets (S3 keys, passwords in the database and Redis URLs, secret query parameters) wherever
it occurs in the formatted line, message, arguments, exception text and extra fields alike.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import SecretStr
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from qc_worker.config import REDACTED, Settings, is_sensitive_name

__all__ = [
    "configure_logging",
    "current_context",
    "log_context",
    "pop_context",
    "push_context",
    "secret_values",
]

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("qc_log_context")
_NO_IDS: Mapping[str, str] = MappingProxyType({})


def _ids() -> Mapping[str, str]:
    return _context.get(_NO_IDS)


_KEYS_ATTR = "qc_context_keys"
# Attributes of every LogRecord (and what formatters add); a context id must not shadow one.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    _KEYS_ATTR,
}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = ["levelname", "name", "message"]
_JSON_RENAME = {"levelname": "level", "name": "logger"}


# --- context ---------------------------------------------------------------------------------


def current_context() -> dict[str, str]:
    """The ids every record logged here carries now."""
    return dict(_ids())


def push_context(**ids: Any) -> contextvars.Token:
    """Add ids to the logging context until :func:`pop_context` (None values are skipped).

    For code that cannot use a ``with`` block, such as Celery's task_prerun / task_postrun
    signals; :func:`log_context` is the usual way.
    """
    bad = sorted(set(ids) & _RECORD_ATTRS)
    if bad:
        raise ValueError(f"{', '.join(bad)}: name(s) of log record attributes, not usable as ids")
    merged = {**_ids(), **{k: str(v) for k, v in ids.items() if v is not None}}
    return _context.set(merged)


def pop_context(token: contextvars.Token) -> None:
    """Restore the context :func:`push_context` replaced."""
    _context.reset(token)


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Records logged inside carry these ids (``job_id=..., image_id=...``); nests, and the
    inner value wins."""
    token = push_context(**ids)
    try:
        yield
    finally:
        pop_context(token)


class _ContextFilter(logging.Filter):
    """Copies the context ids onto each record (an explicit ``extra=`` of the same name wins)
    and notes their names, which the text formatter shows after the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _ids()
        for key, value in ids.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        setattr(record, _KEYS_ATTR, tuple(ids))
        return True


# --- secrets ---------------------------------------------------------------------------------


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if is_sensitive_name(k) and v]
    return found


def secret_values(settings: Settings) -> set[str]:
    """Every secret the settings hold: SecretStr values, and passwords and secret query
    parameters of URL values (the database and Redis URLs)."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and "://" in value:
            found += _url_secrets(value)
    return {s for s in found if s and s != REDACTED}


def _spellings(secret: str) -> set[str]:
    """The forms a secret takes in a log line: as given, URL-quoted or unquoted, and escaped
    inside a JSON string or a Python repr."""
    plain = {secret, unquote(secret), quote(secret, safe=""), repr(secret)[1:-1]}
    escaped = {json.dumps(s, ensure_ascii=a)[1:-1] for s in plain for a in (True, False)}
    return {f for f in plain | escaped if f}


class _MaskingFormatter(logging.Formatter):
    """Formats with another formatter, then masks every spelling of every secret."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        spellings: set[str] = set()
        for secret in secrets:
            spellings |= _spellings(secret)
        # Longest first, so a secret containing another is masked whole.
        self.spellings = sorted(spellings, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for s in self.spellings:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(self.inner.format(record))


# --- formatters and the handler ----------------------------------------------------------------


class _TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [job_id=... image_id=...]``, then any traceback."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = [f"{k}={getattr(record, k)}" for k in getattr(record, _KEYS_ATTR, ())]
        return f"{line} [{' '.join(ids)}]" if ids else line


def _formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        # "time": ISO 8601 in UTC, e.g. 2025-01-31T09:15:02.123456+00:00.
        return JsonFormatter(
            _JSON_FIELDS,
            rename_fields=_JSON_RENAME,
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, _KEYS_ATTR],
        )
    return _TextFormatter(_TEXT_FORMAT)


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``settings.log_level`` in ``settings.log_format``, ids from
    :func:`log_context` on each record, secrets masked.

    Idempotent: a second call replaces the handler the first one installed (other handlers,
    such as pytest's, are left alone).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_qc_handler", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stderr)
    handler._qc_handler = True  # type: ignore[attr-defined]
    handler.addFilter(_ContextFilter())
    handler.setFormatter(_MaskingFormatter(_formatter(settings), secret_values(settings)))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
