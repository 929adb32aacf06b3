"""Typed values to table rows: the one place a detector or pipeline value becomes columns.

A value's field names are its table's column names: a
:class:`~qc_worker.detector.regions.Region` is a ``blur_regions`` row, a
:class:`~qc_worker.detector.roi.Roi` a ``crop_rois`` row and an
:class:`~qc_worker.values.ImageOrigin` the origin columns of an ``images`` row; a ``bbox``
is the four columns ``x0, y0, x1, y1``. So the mapping is the value's own fields, each
converted by its declared type, and adding a field to a value adds it to the row.

The conversion is what the types cannot promise at run time and the database would take
silently or refuse late: numpy scalars become Python numbers (the drivers refuse them), a
float must be finite (PostgreSQL would store NaN), a whole number must be whole, a verdict
or kind must be a member of its vocabulary, a box must have ``x0 <= x1`` and ``y0 <= y1``
and no negative corner. Bad values raise :class:`ValueError` or :class:`TypeError` naming
the field, before anything is written.
"""

from __future__ import annotations

import math
import operator
import types
from dataclasses import fields
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi
    from qc_worker.values import ImageOrigin

__all__ = ["columns", "member", "whole_number"]

_BOX = ("x0", "y0", "x1", "y1")
E = TypeVar("E", bound=StrEnum)


def columns(value: Region | Roi | ImageOrigin, where: str | None = None) -> dict[str, Any]:
    """The column values of ``value`` (see the module doc); ``where`` names it in errors."""
    where = where or type(value).__name__
    row: dict[str, Any] = {}
    for name, kind in _field_types(type(value)).items():
        item = getattr(value, name)
        if name == "bbox":
            row.update(_box(item, where))
        else:
            row[name] = _convert(item, kind, f"{where}.{name}")
    return row


def whole_number(value: Any, where: str) -> int:
    """``value`` as an int: integers of any kind, and floats that are whole (5.0, not 5.5)."""
    if isinstance(value, bool):
        raise TypeError(f"{where} must be an integer, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    return int(number)


def member(kind: type[E], value: Any, where: str) -> E:
    """The member of the vocabulary class ``kind`` that ``value`` names (a member or its string)."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise ValueError(f"{where} must be one of {allowed}, got {value!r}") from None


@cache
def _field_types(cls: type) -> dict[str, tuple[type | None, bool]]:
    """Each field's declared type without ``None`` (None when it is a union of several or
    not a plain class) and whether it may be None."""
    hints = get_type_hints(cls)
    out = {}
    for f in fields(cls):
        hint = hints[f.name]
        args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        kinds = [a for a in args if a is not type(None)]
        kind = kinds[0] if len(kinds) == 1 and isinstance(kinds[0], type) else None
        out[f.name] = (kind, len(kinds) < len(args))
    return out


def _convert(value: Any, declared: tuple[type | None, bool], where: str) -> Any:
    kind, optional = declared
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where} is required")
    if kind is not None and issubclass(kind, StrEnum):
        return member(kind, value, where)
    if kind is bool:
        if hasattr(value, "item"):  # numpy bool
            value = value.item()
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be a bool, got {type(value).__name__}")
        return value
    if kind is int:
        return whole_number(value, where)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(f"{where} must be a number, got a bool")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{where} must be finite, got {number}")
        return number
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _box(value: Any, where: str) -> dict[str, int]:
    coords = list(value)
    if len(coords) != 4:
        raise ValueError(f"{where}.bbox must have 4 values (x0, y0, x1, y1), got {len(coords)}")
    box = {name: whole_number(v, f"{where}.{name}") for name, v in zip(_BOX, coords, strict=True)}
    if min(box.values()) < 0:
        raise ValueError(f"{where}: box must not have a negative corner, got {box}")
    if box["x1"] < box["x0"] or box["y1"] < box["y0"]:
        raise ValueError(f"{where}: box must have x0 <= x1 and y0 <= y1, got {box}")
    return box
