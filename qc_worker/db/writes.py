"""Idempotent writes: running any of these twice with the same input leaves one result.

Every write here is a single ``INSERT .. ON CONFLICT`` keyed by the table's natural key
(PostgreSQL and SQLite both speak it), so two workers racing on the same key never both
insert and never fail with a duplicate-key error: on PostgreSQL the second waits for the
first's row lock and then updates the row the first committed.

The functions work inside the caller's transaction and do not commit; the caller owns the
unit of work (the pipeline: ``with sessions.begin() as session:`` on its sessionmaker)::

    with sessions.begin() as session:
        model = get_or_create_model_version(session, "smb-v3", checksum, metrics, thresholds)
        image = upsert_image(session, uri, sha256, width, height, "vendor", vendor="acme")
        save_screening(session, image.id, model.id, "review", scores, timings, regions, rois)

:func:`save_screening` runs inside a SAVEPOINT, so its screening, regions and ROIs are
written all together or not at all, and a failure leaves the caller's session usable.

Input is checked before anything is written: JSON documents must be plain JSON (numpy
scalars and arrays are converted; NaN and infinity are refused, PostgreSQL would refuse
them too), hashes must be 64 hex digits, boxes must be integer pixel boxes with
``x0 <= x1`` and ``y0 <= y1``. Bad input raises :class:`ValueError` (or ``TypeError``).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from qc_worker.db.models import BlurRegion, CropRoi, Image, ModelVersion, Screening, utcnow
from qc_worker.vocabulary import ImageStatus, RegionVerdict, Verdict

__all__ = [
    "REGION_FIELDS",
    "ROI_FIELDS",
    "dialect_insert",
    "get_or_create_model_version",
    "record_image_failure",
    "save_screening",
    "upsert_image",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")

#: Keys a region dict may have (``bbox`` may be given instead of x0, y0, x1, y1). Aliases:
#: ``area`` -> area_fraction, ``probability`` -> mean_probability,
#: ``intensity`` -> mean_intensity.
REGION_FIELDS = (
    "kind",
    "label",
    "x0",
    "y0",
    "x1",
    "y1",
    "area_fraction",
    "coverage",
    "mean_probability",
    "mean_intensity",
    "verdict",
)
_REGION_ALIASES = {
    "area": "area_fraction",
    "probability": "mean_probability",
    "intensity": "mean_intensity",
}
#: Keys an ROI dict may have (``bbox`` may be given instead of x0, y0, x1, y1). Aliases:
#: ``blur_inside`` -> blur_fraction.
ROI_FIELDS = (
    "aspect",
    "x0",
    "y0",
    "x1",
    "y1",
    "blur_fraction",
    "safe",
    "area_fraction",
    "keeps_faces",
    "reason",
)
_ROI_ALIASES = {"blur_inside": "blur_fraction"}


# --- public API --------------------------------------------------------------------------
def get_or_create_model_version(
    session: Session,
    name: str,
    checksum: str,
    metrics: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
) -> ModelVersion:
    """The model version with this checksum, created from the other arguments if new.

    Model versions are unique by checksum and immutable: when the checksum is already
    recorded, that row is returned as it is (its name, metrics and thresholds are kept).
    """
    name = _nonempty_str(name, "name")
    checksum = _nonempty_str(checksum, "checksum")
    now = utcnow()
    stmt = (
        dialect_insert(session, ModelVersion)
        .values(
            name=name,
            checksum=checksum,
            metrics=_json_document(metrics, "metrics"),
            thresholds=_json_document(thresholds, "thresholds"),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[ModelVersion.checksum])
    )
    session.execute(stmt)
    return session.execute(
        select(ModelVersion).where(ModelVersion.checksum == checksum).execution_options(populate_existing=True)
    ).scalar_one()


def upsert_image(
    session: Session,
    uri: str,
    sha256: str,
    width: int,
    height: int,
    source_kind: str | None = None,
    *,
    title_id: int | None = None,
    video_id: int | None = None,
    job_id: int | None = None,
    timestamp_s: float | None = None,
    frame_index: int | None = None,
    vendor: str | None = None,
) -> Image:
    """Record a readable image; the same ``(uri, sha256)`` always gives the same row.

    On a repeat, the row's size is updated, its status set back to ``ok`` (clearing an
    earlier failure of the same content), and the optional fields that are given replace
    the stored ones; those passed as ``None`` keep what is stored.
    """
    values = _image_values(
        uri,
        _sha256(sha256),
        _positive_int(width, "width"),
        _positive_int(height, "height"),
        ImageStatus.OK,
        None,
        source_kind=source_kind,
        title_id=title_id,
        video_id=video_id,
        job_id=job_id,
        timestamp_s=timestamp_s,
        frame_index=frame_index,
        vendor=vendor,
    )
    return _upsert_image_row(session, values)


def record_image_failure(
    session: Session,
    uri: str,
    reason: str,
    sha256: str | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    source_kind: str | None = None,
    title_id: int | None = None,
    video_id: int | None = None,
    job_id: int | None = None,
    timestamp_s: float | None = None,
    frame_index: int | None = None,
    vendor: str | None = None,
) -> Image:
    """Record that an image could not be read, decoded or validated, and why.

    ``sha256`` is the hash of the bytes when they could be read (then the row is keyed by
    ``(uri, sha256)`` like any image), or ``None`` when not even that (then there is one
    such row per uri). Recording the same failure twice leaves one row with the latest
    reason. The pipeline does not screen failed images (nothing here enforces that).
    """
    values = _image_values(
        uri,
        None if sha256 is None else _sha256(sha256),
        _opt_positive_int(width, "width"),
        _opt_positive_int(height, "height"),
        ImageStatus.FAILED,
        _nonempty_str(reason, "reason"),
        source_kind=source_kind,
        title_id=title_id,
        video_id=video_id,
        job_id=job_id,
        timestamp_s=timestamp_s,
        frame_index=frame_index,
        vendor=vendor,
    )
    return _upsert_image_row(session, values)


def _image_values(
    uri: str,
    sha256: str | None,
    width: int | None,
    height: int | None,
    status: ImageStatus,
    failure_reason: str | None,
    *,
    source_kind: Any,
    title_id: Any,
    video_id: Any,
    job_id: Any,
    timestamp_s: Any,
    frame_index: Any,
    vendor: Any,
) -> dict[str, Any]:
    """One image row's values, the optional fields validated the same way for both writers."""
    now = utcnow()
    return {
        "uri": _nonempty_str(uri, "uri"),
        "sha256": sha256,
        "width": width,
        "height": height,
        "source_kind": _opt_str(source_kind, "source_kind"),
        "title_id": _opt_int(title_id, "title_id"),
        "video_id": _opt_int(video_id, "video_id"),
        "job_id": _opt_int(job_id, "job_id"),
        "timestamp_s": _opt_float(timestamp_s, "timestamp_s"),
        "frame_index": _opt_int(frame_index, "frame_index"),
        "vendor": _opt_str(vendor, "vendor"),
        "status": status,
        "failure_reason": failure_reason,
        "created_at": now,
        "updated_at": now,
    }


def save_screening(
    session: Session,
    image_id: int,
    model_version_id: int,
    verdict: Verdict | str,
    scores: Mapping[str, Any],
    timings: Mapping[str, Any],
    regions: Iterable[Mapping[str, Any]] = (),
    rois: Iterable[Mapping[str, Any]] = (),
    *,
    job_id: int | None = None,
    overlay_uri: str | None = None,
) -> Screening:
    """Write one screening with its regions and ROIs, replacing any earlier one.

    Keyed by ``(image_id, model_version_id)``: when that screening exists, its verdict,
    scores, timings, job and overlay are replaced, and its regions and ROIs are deleted and
    written anew from ``regions`` and ``rois``, so screening the same image with the same
    model twice leaves exactly one screening, holding the second call's results. The
    screening keeps its id and ``created_at``; ``updated_at`` says when it was last written.

    Each region is a mapping with the keys of :data:`REGION_FIELDS` (``kind``, ``verdict``
    and the box are required); each ROI one with the keys of :data:`ROI_FIELDS`
    (``aspect``, the box and ``safe`` are required). Returns the screening with its
    ``regions`` and ``rois`` loaded.
    """
    image_id = _required_int(image_id, "image_id")
    model_version_id = _required_int(model_version_id, "model_version_id")
    verdict = _verdict(verdict, "verdict")
    region_rows = [_region_row(r, i) for i, r in enumerate(regions)]
    roi_rows = [_roi_row(r, i) for i, r in enumerate(rois)]
    values = {
        "image_id": image_id,
        "model_version_id": model_version_id,
        "job_id": _opt_int(job_id, "job_id"),
        "verdict": verdict,
        "scores": _json_document(scores, "scores"),
        "timings": _json_document(timings, "timings"),
        "overlay_uri": _opt_str(overlay_uri, "overlay_uri"),
    }
    with session.begin_nested():
        now = utcnow()
        values["created_at"] = values["updated_at"] = now
        stmt = dialect_insert(session, Screening).values(**values)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[Screening.image_id, Screening.model_version_id],
            set_={
                "job_id": excluded.job_id,
                "verdict": excluded.verdict,
                "scores": excluded.scores,
                "timings": excluded.timings,
                "overlay_uri": excluded.overlay_uri,
                "updated_at": excluded.updated_at,
            },
        ).returning(Screening.id)
        screening_id = session.execute(stmt).scalar_one()
        session.execute(delete(BlurRegion).where(BlurRegion.screening_id == screening_id))
        session.execute(delete(CropRoi).where(CropRoi.screening_id == screening_id))
        if region_rows:
            session.execute(
                dialect_insert(session, BlurRegion),
                [{"screening_id": screening_id, **row} for row in region_rows],
            )
        if roi_rows:
            session.execute(
                dialect_insert(session, CropRoi),
                [{"screening_id": screening_id, **row} for row in roi_rows],
            )
    return session.execute(
        select(Screening)
        .where(Screening.id == screening_id)
        .options(selectinload(Screening.regions), selectinload(Screening.rois))
        .execution_options(populate_existing=True)
    ).scalar_one()


# --- internals ---------------------------------------------------------------------------
def dialect_insert(session: Session, model: type) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) for ``model``."""
    dialect = session.get_bind(mapper=model).dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise ValueError(f"idempotent writes support PostgreSQL and SQLite, not {dialect!r}")


def _upsert_image_row(session: Session, values: dict[str, Any]) -> Image:
    stmt = dialect_insert(session, Image).values(**values)
    excluded = stmt.excluded
    table = Image.__table__.c

    def keep_if_null(column: str) -> Any:
        return func.coalesce(getattr(excluded, column), table[column])

    update = {
        "status": excluded.status,
        "failure_reason": excluded.failure_reason,
        "updated_at": excluded.updated_at,
        **{
            column: keep_if_null(column)
            for column in (
                "width",
                "height",
                "source_kind",
                "title_id",
                "video_id",
                "job_id",
                "timestamp_s",
                "frame_index",
                "vendor",
            )
        },
    }
    if values["sha256"] is None:
        stmt = stmt.on_conflict_do_update(index_elements=[Image.uri], index_where=Image.sha256.is_(None), set_=update)
    else:
        stmt = stmt.on_conflict_do_update(index_elements=[Image.uri, Image.sha256], set_=update)
    image_id = session.execute(stmt.returning(Image.id)).scalar_one()
    image = session.get(Image, image_id, populate_existing=True)
    assert image is not None
    return image


def _region_row(region: Mapping[str, Any], index: int) -> dict[str, Any]:
    where = f"regions[{index}]"
    data = _fields(region, where, REGION_FIELDS, _REGION_ALIASES)
    row = {
        "kind": _nonempty_str(data.get("kind"), f"{where}.kind"),
        "label": _opt_str(data.get("label"), f"{where}.label"),
        **_box(data, where),
        "verdict": _verdict(data.get("verdict"), f"{where}.verdict", RegionVerdict),
    }
    for name in ("area_fraction", "coverage", "mean_probability", "mean_intensity"):
        row[name] = _opt_float(data.get(name), f"{where}.{name}")
    return row


def _roi_row(roi: Mapping[str, Any], index: int) -> dict[str, Any]:
    where = f"rois[{index}]"
    data = _fields(roi, where, ROI_FIELDS, _ROI_ALIASES)
    safe = _opt_bool(data.get("safe"), f"{where}.safe")
    if safe is None:
        raise ValueError(f"{where}.safe is required")
    return {
        "aspect": _nonempty_str(data.get("aspect"), f"{where}.aspect"),
        **_box(data, where),
        "blur_fraction": _opt_float(data.get("blur_fraction"), f"{where}.blur_fraction"),
        "safe": safe,
        "area_fraction": _opt_float(data.get("area_fraction"), f"{where}.area_fraction"),
        "keeps_faces": _opt_bool(data.get("keeps_faces"), f"{where}.keeps_faces"),
        "reason": _opt_str(data.get("reason"), f"{where}.reason"),
    }


def _opt_bool(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy bool
        value = value.item()
    if not isinstance(value, bool):
        raise TypeError(f"{where} must be a bool, got {type(value).__name__}")
    return value


def _fields(item: Mapping[str, Any], where: str, allowed: Sequence[str], aliases: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise TypeError(f"{where} must be a mapping, got {type(item).__name__}")
    data: dict[str, Any] = {}
    for key, value in item.items():
        name = aliases.get(key, key)
        if name == "bbox":
            if not isinstance(value, Sequence) and not hasattr(value, "tolist"):
                raise TypeError(f"{where}.bbox must be a sequence (x0, y0, x1, y1)")
            box = list(value.tolist() if hasattr(value, "tolist") else value)
            if len(box) != 4:
                raise ValueError(f"{where}.bbox must have 4 values (x0, y0, x1, y1), got {len(box)}")
            for coord, v in zip(("x0", "y0", "x1", "y1"), box, strict=True):
                if coord in data:
                    raise ValueError(f"{where}: both bbox and {coord} given")
                data[coord] = v
            continue
        if name not in allowed:
            raise ValueError(
                f"{where}: unknown key {key!r}; allowed: bbox, {', '.join(allowed)}"
                + (f" (aliases: {', '.join(aliases)})" if aliases else "")
            )
        if name in data:
            raise ValueError(f"{where}: {name} given twice")
        data[name] = value
    return data


def _box(data: Mapping[str, Any], where: str) -> dict[str, int]:
    box = {}
    for coord in ("x0", "y0", "x1", "y1"):
        if data.get(coord) is None:
            raise ValueError(f"{where}.{coord} is required (or give bbox=(x0, y0, x1, y1))")
        box[coord] = _int(data[coord], f"{where}.{coord}")
        if box[coord] < 0:
            raise ValueError(f"{where}.{coord} must not be negative, got {box[coord]}")
    if box["x1"] < box["x0"] or box["y1"] < box["y0"]:
        raise ValueError(f"{where}: box must have x0 <= x1 and y0 <= y1, got {box}")
    return box


def _verdict(value: Any, where: str, kind: type[StrEnum] = Verdict) -> Any:
    """An image verdict (pass/review/reject) or, with ``kind=RegionVerdict``, blurred/sharp."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise ValueError(f"{where} must be one of {allowed}, got {value!r}") from None


def _nonempty_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _nonempty_str(value, where)


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {value!r}")
    return value.lower()


def _int(value: Any, where: str) -> int:
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


def _required_int(value: Any, where: str) -> int:
    if value is None:
        raise ValueError(f"{where} is required")
    return _int(value, where)


def _opt_int(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _positive_int(value: Any, where: str) -> int:
    number = _required_int(value, where)
    if number <= 0:
        raise ValueError(f"{where} must be positive, got {number}")
    return number


def _opt_positive_int(value: Any, where: str) -> int | None:
    return None if value is None else _positive_int(value, where)


def _opt_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{where} must be a number, got a bool")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} must be finite, got {number}")
    return number


def _json_document(value: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a mapping (a JSON object), got {type(value).__name__}")
    return _jsonable(value, where)


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (numpy scalars/arrays converted); NaN/inf refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite for JSON, got {value}")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: JSON object keys must be strings, got {key!r}")
            out[key] = _jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _jsonable(value.tolist(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")
