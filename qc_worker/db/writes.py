"""Idempotent writes: running any of these twice with the same input leaves one result.

Every write here is a single ``INSERT .. ON CONFLICT`` keyed by the table's natural key
(PostgreSQL and SQLite both speak it), so two workers racing on the same key never both
insert and never fail with a duplicate-key error: on PostgreSQL the second waits for the
first's row lock and then updates the row the first committed.

The functions work inside the caller's transaction and do not commit; the caller owns the
unit of work (the pipeline: ``with sessions.begin() as session:`` on its sessionmaker)::

    with sessions.begin() as session:
        model = get_or_create_model_version(session, "smb-v3", checksum, metrics, thresholds)
        image = upsert_image(session, uri, sha256, width, height, ImageOrigin("vendor", vendor="acme"))
        save_screening(session, image.id, model.id, "review", scores, timings, report.regions, rois)

:func:`save_screening` runs inside a SAVEPOINT, so its screening, regions and ROIs are
written all together or not at all, and a failure leaves the caller's session usable.

Input is checked before anything is written: regions, ROIs and image origins are typed
values, mapped to rows by :func:`qc_worker.db.rows.columns` (which checks what their types
cannot promise); JSON documents must be plain JSON (numpy scalars and arrays are converted;
NaN and infinity are refused, PostgreSQL would refuse them too) and hashes 64 hex digits.
Bad input raises :class:`ValueError` (or ``TypeError``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from qc_worker.db.models import BlurRegion, CropRoi, Image, ModelVersion, Screening, utcnow
from qc_worker.db.rows import columns, member, whole_number
from qc_worker.values import ImageOrigin
from qc_worker.vocabulary import ImageStatus, Verdict

if TYPE_CHECKING:  # the detector's modules pull in OpenCV; the database needs only their fields
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi

__all__ = [
    "dialect_insert",
    "get_or_create_model_version",
    "record_image_failure",
    "save_screening",
    "upsert_image",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    origin: ImageOrigin = ImageOrigin(),
) -> Image:
    """Record a readable image; the same ``(uri, sha256)`` always gives the same row.

    On a repeat, the row's size is updated, its status set back to ``ok`` (clearing an
    earlier failure of the same content), and the fields of ``origin`` that are given
    replace the stored ones; those that are ``None`` keep what is stored.
    """
    values = _image_values(
        uri,
        _sha256(sha256),
        _positive_int(width, "width"),
        _positive_int(height, "height"),
        ImageStatus.OK,
        None,
        origin,
    )
    return _upsert_image_row(session, values)


def record_image_failure(
    session: Session,
    uri: str,
    reason: str,
    sha256: str | None = None,
    *,
    origin: ImageOrigin = ImageOrigin(),
    width: int | None = None,
    height: int | None = None,
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
        None if width is None else _positive_int(width, "width"),
        None if height is None else _positive_int(height, "height"),
        ImageStatus.FAILED,
        _nonempty_str(reason, "reason"),
        origin,
    )
    return _upsert_image_row(session, values)


def _image_values(
    uri: str,
    sha256: str | None,
    width: int | None,
    height: int | None,
    status: ImageStatus,
    failure_reason: str | None,
    origin: ImageOrigin,
) -> dict[str, Any]:
    """One image row's values, its origin mapped the same way for both writers."""
    now = utcnow()
    return {
        "uri": _nonempty_str(uri, "uri"),
        "sha256": sha256,
        "width": width,
        "height": height,
        **columns(origin, "origin"),
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
    regions: Iterable[Region] = (),
    rois: Iterable[Roi] = (),
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

    Regions and ROIs are the detector's values, written by :func:`~qc_worker.db.rows.columns`.
    Returns the screening with its ``regions`` and ``rois`` loaded.
    """
    verdict = member(Verdict, verdict, "verdict")
    region_rows = [columns(r, f"regions[{i}]") for i, r in enumerate(regions)]
    roi_rows = [columns(r, f"rois[{i}]") for i, r in enumerate(rois)]
    values = {
        "image_id": image_id,
        "model_version_id": model_version_id,
        "job_id": job_id,
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
        **{column: keep_if_null(column) for column in ("width", "height", *(f.name for f in fields(ImageOrigin)))},
    }
    if values["sha256"] is None:
        stmt = stmt.on_conflict_do_update(index_elements=[Image.uri], index_where=Image.sha256.is_(None), set_=update)
    else:
        stmt = stmt.on_conflict_do_update(index_elements=[Image.uri, Image.sha256], set_=update)
    image_id = session.execute(stmt.returning(Image.id)).scalar_one()
    image = session.get(Image, image_id, populate_existing=True)
    assert image is not None
    return image


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


def _positive_int(value: Any, where: str) -> int:
    number = whole_number(value, where)
    if number <= 0:
        raise ValueError(f"{where} must be positive, got {number}")
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
