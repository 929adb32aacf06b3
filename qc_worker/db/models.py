"""SQLAlchemy 2.0 ORM models of the results database.

The tables, in the order they depend on each other::

    titles          one catalog title (external id from the catalog, name)
    videos          a title's video, sampled into candidate thumbnails
    jobs            one unit of queued work (frames / vendor / rescan / local) and its progress
    job_items       one image a job must screen, and what became of it (pending/screened/failed)
    images          one image: where it is (uri), its content hash, size, where it came from,
                    and whether it could be read (status ok / failed + failure_reason)
    model_versions  one detector checkpoint, unique by checksum, with metrics and thresholds
    screenings      the result of one model version on one image; UNIQUE (image, model version)
    blur_regions    per-region verdicts of a screening (components, faces, foreground, grid)
    crop_rois       crop-safe regions of interest of a screening, one or more per aspect ratio

The Alembic revisions in ``migrations/versions`` are the truth about the schema; these
models mirror them (a test compares the two). Everything here is portable between
PostgreSQL and SQLite: enumerations are ``VARCHAR`` + ``CHECK`` (not native enum types),
JSON is ``sqlalchemy.JSON`` (``JSONB`` on PostgreSQL), and timestamps are always
timezone-aware UTC ``datetime`` objects in Python, whichever backend stores them.
Constraint and index names follow :data:`NAMING_CONVENTION`, so migrations can name them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from qc_worker.vocabulary import (
    ImageStatus,
    JobItemStatus,
    JobKind,
    JobStatus,
    RegionVerdict,
    SourceKind,
    Verdict,
)

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "BlurRegion",
    "CropRoi",
    "Image",
    "ImageStatus",
    "Job",
    "JobItem",
    "JobItemStatus",
    "JobKind",
    "JobStatus",
    "ModelVersion",
    "Screening",
    "SourceKind",
    "Title",
    "UTCDateTime",
    "Verdict",
    "Video",
    "utcnow",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Lengths of the short string columns (kept in step with the migrations).
URI_LENGTH = 2048
SHA256_LENGTH = 64
KIND_LENGTH = 32


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


# --- enumerations (stored as their string values; defined in qc_worker.vocabulary) -----


def _enum(cls: type[StrEnum], name: str) -> Enum:
    """A portable enumeration column type: VARCHAR(32) + CHECK ck_<table>_<name>."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=KIND_LENGTH,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


# --- column types ------------------------------------------------------------------------
class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always gives and takes aware datetimes.

    Values are converted to UTC before they are stored; SQLite (which has no time-zone
    type) stores the UTC wall time and gets ``tzinfo=UTC`` back on load. A naive datetime
    is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON documents: ``JSON`` everywhere, ``JSONB`` on PostgreSQL (indexable, comparable).
JSONType = JSON().with_variant(JSONB(), "postgresql")
#: Surrogate keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
    }


def _id() -> Mapped[int]:
    return mapped_column(IdType, primary_key=True, autoincrement=True)


def _fk(target: str, ondelete: str, nullable: bool = True) -> Any:
    return mapped_column(IdType, ForeignKey(target, ondelete=ondelete), nullable=nullable)


def _created_at() -> Mapped[datetime]:
    return mapped_column(default=utcnow, server_default=func.now(), nullable=False)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now(), nullable=False)


# --- tables ------------------------------------------------------------------------------
class Title(Base):
    __tablename__ = "titles"

    id: Mapped[int] = _id()
    external_id: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    videos: Mapped[list[Video]] = relationship(
        back_populates="title", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (UniqueConstraint("external_id"),)

    def __repr__(self) -> str:
        return f"Title(id={self.id!r}, external_id={self.external_id!r})"


class Video(Base):
    __tablename__ = "videos"

    id: Mapped[int] = _id()
    title_id: Mapped[int | None] = _fk("titles.id", "CASCADE")
    uri: Mapped[str] = mapped_column(String(URI_LENGTH), nullable=False)
    sha256: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    duration_s: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    title: Mapped[Title | None] = relationship(back_populates="videos")

    __table_args__ = (
        UniqueConstraint("uri"),
        Index("ix_videos_title_id", "title_id"),
    )

    def __repr__(self) -> str:
        return f"Video(id={self.id!r}, uri={self.uri!r})"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = _id()
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH), nullable=False)
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "status"),
        nullable=False,
        default=JobStatus.QUEUED,
        server_default=JobStatus.QUEUED.value,
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    items_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items_failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    payload: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    task_id: Mapped[str | None] = mapped_column(String(255))
    title_id: Mapped[int | None] = _fk("titles.id", "SET NULL")
    video_id: Mapped[int | None] = _fk("videos.id", "SET NULL")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    title: Mapped[Title | None] = relationship()
    video: Mapped[Video | None] = relationship()

    __table_args__ = (
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_kind", "kind"),
        Index("ix_jobs_title_id", "title_id"),
        Index("ix_jobs_video_id", "video_id"),
    )

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, status={self.status!r})"


class JobItem(Base):
    """One image a job must screen. A job's counts and its end come from these rows, so
    a task that is retried or delivered twice cannot count anything twice."""

    __tablename__ = "job_items"

    id: Mapped[int] = _id()
    job_id: Mapped[int] = _fk("jobs.id", "CASCADE", nullable=False)
    uri: Mapped[str] = mapped_column(String(URI_LENGTH), nullable=False)
    status: Mapped[JobItemStatus] = mapped_column(
        _enum(JobItemStatus, "status"),
        nullable=False,
        default=JobItemStatus.PENDING,
        server_default=JobItemStatus.PENDING.value,
    )
    image_id: Mapped[int | None] = _fk("images.id", "SET NULL")
    reason: Mapped[str | None] = mapped_column(Text)
    timestamp_s: Mapped[float | None] = mapped_column(Float)
    frame_index: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    job: Mapped[Job] = relationship()
    image: Mapped[Image | None] = relationship()

    __table_args__ = (
        UniqueConstraint("job_id", "uri"),
        Index("ix_job_items_job_id_status", "job_id", "status"),
        Index("ix_job_items_image_id", "image_id"),
    )

    def __repr__(self) -> str:
        return f"JobItem(id={self.id!r}, job_id={self.job_id!r}, status={self.status!r})"


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = _id()
    uri: Mapped[str] = mapped_column(String(URI_LENGTH), nullable=False)
    sha256: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    source_kind: Mapped[str | None] = mapped_column(String(KIND_LENGTH))
    title_id: Mapped[int | None] = _fk("titles.id", "SET NULL")
    video_id: Mapped[int | None] = _fk("videos.id", "SET NULL")
    job_id: Mapped[int | None] = _fk("jobs.id", "SET NULL")
    timestamp_s: Mapped[float | None] = mapped_column(Float)
    frame_index: Mapped[int | None] = mapped_column(Integer)
    vendor: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[ImageStatus] = mapped_column(
        _enum(ImageStatus, "status"),
        nullable=False,
        default=ImageStatus.OK,
        server_default=ImageStatus.OK.value,
    )
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    title: Mapped[Title | None] = relationship()
    video: Mapped[Video | None] = relationship()
    job: Mapped[Job | None] = relationship()
    screenings: Mapped[list[Screening]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        # One row per (uri, content). Rows with no hash (the bytes could not even be read)
        # are one per uri, through the partial index below.
        UniqueConstraint("uri", "sha256"),
        Index(
            "uq_images_uri_no_sha256",
            "uri",
            unique=True,
            postgresql_where=text("sha256 IS NULL"),
            sqlite_where=text("sha256 IS NULL"),
        ),
        Index("ix_images_sha256", "sha256"),
        Index("ix_images_title_id", "title_id"),
        Index("ix_images_video_id", "video_id"),
        Index("ix_images_job_id", "job_id"),
        Index("ix_images_vendor", "vendor"),
        Index("ix_images_status", "status"),
    )

    def __repr__(self) -> str:
        return f"Image(id={self.id!r}, uri={self.uri!r}, status={self.status!r})"


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    checksum: Mapped[str] = mapped_column(String(128), nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    thresholds: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (UniqueConstraint("checksum"),)

    def __repr__(self) -> str:
        return f"ModelVersion(id={self.id!r}, name={self.name!r}, checksum={self.checksum!r})"


class Screening(Base):
    __tablename__ = "screenings"

    id: Mapped[int] = _id()
    image_id: Mapped[int] = _fk("images.id", "CASCADE", nullable=False)
    model_version_id: Mapped[int] = _fk("model_versions.id", "RESTRICT", nullable=False)
    job_id: Mapped[int | None] = _fk("jobs.id", "SET NULL")
    verdict: Mapped[Verdict] = mapped_column(_enum(Verdict, "verdict"), nullable=False)
    scores: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    overlay_uri: Mapped[str | None] = mapped_column(String(URI_LENGTH))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    image: Mapped[Image] = relationship(back_populates="screenings")
    model_version: Mapped[ModelVersion] = relationship()
    job: Mapped[Job | None] = relationship()
    regions: Mapped[list[BlurRegion]] = relationship(
        back_populates="screening",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="BlurRegion.id",
    )
    rois: Mapped[list[CropRoi]] = relationship(
        back_populates="screening",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="CropRoi.id",
    )

    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id"),
        Index("ix_screenings_model_version_id_verdict", "model_version_id", "verdict"),
        Index("ix_screenings_job_id", "job_id"),
        Index("ix_screenings_created_at", "created_at"),
        # for the analyst views (migration 0003, docs/sql.md): screened-at ranges, and one
        # model version's (image, verdict) pairs read from the index alone
        Index("ix_screenings_updated_at", "updated_at"),
        Index(
            "ix_screenings_model_version_id_image_id_verdict",
            "model_version_id",
            "image_id",
            "verdict",
        ),
    )

    def __repr__(self) -> str:
        return (
            f"Screening(id={self.id!r}, image_id={self.image_id!r}, "
            f"model_version_id={self.model_version_id!r}, verdict={self.verdict!r})"
        )


class BlurRegion(Base):
    __tablename__ = "blur_regions"

    id: Mapped[int] = _id()
    screening_id: Mapped[int] = _fk("screenings.id", "CASCADE", nullable=False)
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH), nullable=False)
    label: Mapped[str | None] = mapped_column(String(255))
    x0: Mapped[int] = mapped_column(Integer, nullable=False)
    y0: Mapped[int] = mapped_column(Integer, nullable=False)
    x1: Mapped[int] = mapped_column(Integer, nullable=False)
    y1: Mapped[int] = mapped_column(Integer, nullable=False)
    area_fraction: Mapped[float | None] = mapped_column(Float)
    coverage: Mapped[float | None] = mapped_column(Float)
    mean_probability: Mapped[float | None] = mapped_column(Float)
    mean_intensity: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[RegionVerdict] = mapped_column(_enum(RegionVerdict, "verdict"), nullable=False)
    #: A face's detector confidence (NULL for other regions and rows before revision 0005).
    confidence: Mapped[float | None] = mapped_column(Float)

    screening: Mapped[Screening] = relationship(back_populates="regions")

    __table_args__ = (Index("ix_blur_regions_screening_id", "screening_id"),)

    def __repr__(self) -> str:
        return f"BlurRegion(id={self.id!r}, kind={self.kind!r}, verdict={self.verdict!r})"


class CropRoi(Base):
    __tablename__ = "crop_rois"

    id: Mapped[int] = _id()
    screening_id: Mapped[int] = _fk("screenings.id", "CASCADE", nullable=False)
    aspect: Mapped[str] = mapped_column(String(16), nullable=False)
    x0: Mapped[int] = mapped_column(Integer, nullable=False)
    y0: Mapped[int] = mapped_column(Integer, nullable=False)
    x1: Mapped[int] = mapped_column(Integer, nullable=False)
    y1: Mapped[int] = mapped_column(Integer, nullable=False)
    blur_fraction: Mapped[float | None] = mapped_column(Float)
    safe: Mapped[bool] = mapped_column(Boolean(create_constraint=False), nullable=False)
    area_fraction: Mapped[float | None] = mapped_column(Float)
    keeps_faces: Mapped[bool | None] = mapped_column(Boolean(create_constraint=False))
    #: Why the crop is unsafe (NULL when it is safe, and on rows from before revision 0004).
    reason: Mapped[str | None] = mapped_column(Text)

    screening: Mapped[Screening] = relationship(back_populates="rois")

    __table_args__ = (Index("ix_crop_rois_screening_id", "screening_id"),)

    def __repr__(self) -> str:
        return f"CropRoi(id={self.id!r}, aspect={self.aspect!r}, safe={self.safe!r})"
