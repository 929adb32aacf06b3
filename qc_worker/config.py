"""The one Settings object for the whole project.

Every setting is read here, from environment variables prefixed ``QC_`` (``QC_DEVICE=cpu``)
or from a ``.env`` file in the working directory when one exists; environment variables
win over the file. Nothing else in the project reads ``os.environ``: code that needs a
setting calls :func:`get_settings` (cached for the life of the process), and tests build a
fresh object with ``Settings(_env_file=None, device="cpu", ...)`` or clear the cache with
``get_settings.cache_clear()``.

The defaults are the embedded, no-servers setup of the design: a SQLite file, local files,
the shipped checkpoint, whatever device is available.

:meth:`Settings.redacted` gives the values with secrets masked, for printing and logging.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ENV_PREFIX",
    "REDACTED",
    "Settings",
    "export_process_variable",
    "format_validation_error",
    "get_settings",
    "is_sensitive_name",
    "redact_url",
]

ENV_PREFIX = "QC_"
REDACTED = "***"

Device = Literal["auto", "cpu", "cuda"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# "key", but not a key *prefix* (redis_key_prefix names keys, it is not one).
_SENSITIVE = re.compile(r"password|passwd|secret|token|key(?!_?prefix)", re.IGNORECASE)


def is_sensitive_name(name: str) -> bool:
    """True when a setting or query-parameter name says it holds a secret."""
    return bool(_SENSITIVE.search(name))


def redact_url(url: str) -> str:
    """Mask the password in a URL, and any query parameter whose name looks secret.

    ``postgresql://qc:hunter2@db:5432/qc`` becomes ``postgresql://qc:***@db:5432/qc``;
    ``redis://:pw@host:6379/0`` becomes ``redis://:***@host:6379/0``. Strings that are not
    URLs, and URLs with no password, come back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    # Same split as urllib's own .password: the last "@" ends the user information.
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_sensitive_name(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_sensitive_name(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _none_if_blank(value: Any) -> Any:
    """An empty or blank string from the environment means "not set"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


# --- screening: faces, regions and verdicts, crop-safe ROIs ----------------------------
# Nested sections of Settings (QC_REGIONS__REJECT_AREA_FRACTION=0.3 and so on); the
# detector modules take them as arguments and read nothing themselves.

_ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")


def parse_aspect(aspect: str) -> float:
    """``"16:9"`` (or ``16x9``, ``16/9``) -> width / height."""
    m = _ASPECT.match(aspect)
    if not m or float(m.group(1)) <= 0 or float(m.group(2)) <= 0:
        raise ValueError(f"aspect ratio must look like '16:9', got {aspect!r}")
    return float(m.group(1)) / float(m.group(2))


class FaceConfig(BaseModel):
    """Face detection settings (defaults suit artwork from thumbnails to 4K)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: Literal["mtcnn", "haar"] = Field(
        "mtcnn",
        description="Which face detector: mtcnn (networks from facenet-pytorch, the default, "
        "chosen by bench/faces.py) or haar (OpenCV's cascades, no confidence).",
    )
    min_confidence: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="MTCNN: a face needs at least this probability to be kept at all.",
    )
    max_side: int = Field(640, ge=64, description="Detect on a copy at most this long.")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="Haar: cascade pyramid step.")
    pyramid_factor: float = Field(
        0.6,
        gt=0.3,
        lt=1.0,
        description="MTCNN: size ratio between P-Net's pyramid levels. 0.6 has a third fewer levels "
        "than facenet-pytorch's 0.709 (faces cost about 10 instead of 13 ms per 960x540 image) and "
        "found 77 of bench/faces.py's 88 hard faces against 78, with 12 false detections against 13.",
    )
    min_neighbors: int = Field(5, ge=1, description="Haar: cascade agreement needed for a face.")
    min_size_fraction: float = Field(
        0.06,
        gt=0.0,
        le=1.0,
        description="Smallest face side, as a fraction of the detection copy's short side.",
    )
    profile: Literal["always", "fallback", "never"] = Field(
        "fallback",
        description="Haar: when to run the profile cascade (on the image and its mirror): always, "
        "only when the frontal cascade found nothing (the default; the profile passes are "
        "about two thirds of the time), or never.",
    )
    duplicate_iou: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="A later box overlapping a kept one above this IoU is a duplicate.",
    )
    duplicate_containment: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="A box lying this much inside a kept one (intersection / own area) is a duplicate too.",
    )


class ObservableConfig(BaseModel):
    """Where motion blur can be seen at all (:mod:`qc_worker.detector.observable`).

    Blur leaves no trace where the sharp content has no texture (a plain sky, flat skin, a
    white wall), so such pixels are neither blurred nor sharp: training leaves them out of
    the mask losses and screening computes every blurred share over observable pixels only.
    The rule is the mean gradient magnitude of the grey image over a window: motion blur
    spreads an edge's gradient along the motion but keeps its total (for windows wider than
    the smear), so the same rule gives about the same map before and after blurring.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(
        15,
        ge=3,
        le=255,
        description="Side (px) of the box the gradient magnitude is averaged over.",
    )
    min_gradient: float = Field(
        0.008,
        ge=0.0,
        le=1.0,
        description="Mean gradient magnitude (grey levels in [0, 1] per pixel) from which a "
        "pixel is observable; a single edge of contrast 0.12 across the window reaches it.",
    )
    min_observable_fraction: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="A region or image with fewer observable pixels than this share of its own "
        "counts as having no blur evidence (coverage 0).",
    )


class RegionConfig(BaseModel):
    """Thresholds of the region statistics and of the image verdict (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid_rows: int = Field(3, ge=1, le=64)
    grid_cols: int = Field(3, ge=1, le=64)
    min_component_fraction: float = Field(
        0.0005, ge=0.0, le=1.0, description="Smallest blur component kept (share of image)."
    )
    max_components: int = Field(32, ge=0, description="Largest components kept, at most.")
    face_blur_limit: float = Field(0.15, gt=0.0, le=1.0, description="A face is blurred from this coverage; rejects.")
    face_review_limit: float = Field(0.05, gt=0.0, le=1.0, description="A face this covered sends the image to review.")
    face_reject_confidence: float = Field(
        0.98,
        ge=0.0,
        le=1.0,
        description="A blurred face rejects only when its detector is at least this sure of it; "
        "a less certain one sends the image to review instead.",
    )
    foreground_blur_limit: float = Field(
        0.30, gt=0.0, le=1.0, description="The foreground is blurred from this coverage (review)."
    )
    foreground_reject_limit: float = Field(
        0.40,
        gt=0.0,
        le=1.0,
        description="In an image without a face the foreground is its subject: this coverage of it "
        "rejects, as reject_area_fraction does for the whole image.",
    )
    grid_blur_limit: float = Field(0.50, gt=0.0, le=1.0, description="A grid cell is blurred from this coverage.")
    review_area_fraction: float = Field(
        0.10, gt=0.0, le=1.0, description="Blurred share of the image that sends to review."
    )
    reject_area_fraction: float = Field(0.40, gt=0.0, le=1.0, description="Blurred share of the image that rejects.")
    review_probability: float = Field(
        0.85,
        ge=0.0,
        le=1.0,
        description="A component this confident (mean probability) sends to review ...",
    )
    review_component_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="... when it covers at least this share of the image."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RegionConfig:
        if self.face_review_limit > self.face_blur_limit:
            raise ValueError("face_review_limit must not exceed face_blur_limit")
        if self.review_area_fraction > self.reject_area_fraction:
            raise ValueError("review_area_fraction must not exceed reject_area_fraction")
        if self.foreground_blur_limit > self.foreground_reject_limit:
            raise ValueError("foreground_blur_limit must not exceed foreground_reject_limit")
        return self


class RoiConfig(BaseModel):
    """Settings of the crop-safe ROI search (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aspects: tuple[str, ...] = Field(("16:9", "4:3", "1:1", "2:3"), min_length=1)
    max_blur_fraction: float = Field(0.05, ge=0.0, le=1.0, description="Most blurred share a safe crop may hold.")
    min_fraction: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Smallest crop side, as a fraction of the side of the largest crop of "
        "that aspect that fits the image.",
    )
    scales: int = Field(11, ge=1, le=200, description="Crop sizes tried, largest to smallest.")
    positions: int = Field(25, ge=1, le=1000, description="Crop places tried per axis.")
    face_margin: float = Field(0.15, ge=0.0, le=2.0, description="Faces are kept with this margin (share of size).")

    @field_validator("aspects")
    @classmethod
    def _valid_aspects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for a in value:
            parse_aspect(a)
        return value


class FrameConfig(BaseModel):
    """Sampling a title's video into candidate thumbnails (``QC_FRAMES__…``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(2.0, gt=0, description="One candidate every this many seconds.")
    analysis_fps: float = Field(
        6.0, gt=0, description="Frames per second looked at for scene cuts (decoding is the cost)."
    )
    scene_threshold: float = Field(
        0.35, gt=0, le=1, description="Histogram (Bhattacharyya) distance that counts as a cut."
    )
    black_luma: float = Field(18.0, ge=0, le=255, description="Frames darker than this mean luma are dropped as black.")
    flat_std: float = Field(6.0, ge=0, description="Frames whose luma spread is below this are dropped as flat.")
    duplicate_distance: int = Field(
        6,
        ge=0,
        le=64,
        description="Perceptual-hash distance at or below which a frame is a duplicate.",
    )
    max_frames: int = Field(300, ge=1, description="Most candidates kept per video (evenly spread).")
    thumbnail_max_side: int = Field(1920, ge=64, description="Thumbnails larger than this are scaled down to it.")
    jpeg_quality: int = Field(95, ge=50, le=100, description="JPEG quality of the thumbnails.")


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Settings(BaseSettings):
    """Effective configuration of one process (worker, beat, CLI or test).

    Each field is set by the environment variable ``QC_<FIELD NAME IN CAPITALS>``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    # --- database -------------------------------------------------------------------
    database_url: str = Field(
        default="sqlite:///./qc.db",
        description=(
            "SQLAlchemy URL of the results database. The default is a SQLite file in the "
            "working directory; production uses PostgreSQL, e.g. "
            "postgresql+psycopg2://qc:PASSWORD@db:5432/qc."
        ),
    )

    # --- broker ---------------------------------------------------------------------
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=("Redis URL of the Celery broker and result backend (redis://, rediss:// or unix://)."),
    )

    redis_key_prefix: str = Field(
        default="",
        description="Prefix of every Redis key the queue uses, so deployments or test runs can "
        "share one Redis (e.g. 'qc-staging:').",
    )
    visibility_timeout_s: int = Field(
        default=7200,
        ge=60,
        description="Seconds Redis waits before it redelivers an unacknowledged task; every task "
        "must finish well inside it (see task_time_limit_s).",
    )
    task_time_limit_s: int = Field(
        default=1800,
        ge=10,
        description="Hard limit of one task, in seconds; at most half the visibility timeout.",
    )
    screen_chunk_size: int = Field(
        default=32, ge=1, description="Images per screening task (big jobs are split into chunks)."
    )
    prefetch_multiplier: int = Field(
        default=1, ge=1, description="Tasks a worker process reserves ahead (1 for GPU workers)."
    )
    retry_max: int = Field(
        default=12,
        ge=0,
        description="Retries of a task after a transient failure (S3, database, Redis): Celery's max_retries. "
        "With back-off doubling from 1 s, capped at retry_backoff_max_s and fully jittered (each wait drawn "
        "between 0 and its back-off), 12 retries wait up to about 37 minutes, half that on average.",
    )
    retry_backoff_max_s: int = Field(
        default=600,
        ge=1,
        description="Cap of the exponential back-off between retries, in seconds.",
    )
    rescan_at: str = Field(default="03:00", description="Time of the nightly rescan, HH:MM in UTC (Celery beat).")
    rescan_max_age_days: int | None = Field(
        default=None,
        ge=1,
        description="The nightly rescan also re-screens screenings older than this; unset: only "
        "images the current model has not screened.",
    )
    beat_schedule_path: Path = Field(
        default=Path("celerybeat-schedule"), description="Where Celery beat keeps its state."
    )
    frames: FrameConfig = Field(default_factory=FrameConfig, description="Video frame sampling.")

    # --- object store ---------------------------------------------------------------
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint URL (MinIO, moto); unset means AWS's own endpoint.",
    )
    s3_region: str = Field(default="us-east-1", description="S3 region name.")
    s3_bucket: str | None = Field(
        default=None,
        description=("Bucket that holds images, thumbnails and overlays; unset means local files only."),
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None,
        description="S3 access key id; unset means boto3's usual credential chain.",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        description="S3 secret access key; unset means boto3's usual credential chain.",
    )
    s3_max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Attempts per S3 request (boto3 standard retries: throttling, 5xx, dropped "
        "connections) before the task itself retries later.",
    )
    local_root: Path = Field(
        default=Path("."),
        description="Folder that local (non-S3) paths are resolved against; thumbnails and "
        "overlays go under it when no bucket is set, and workers read local files only inside it.",
    )

    # --- model ----------------------------------------------------------------------
    model_path: Path | None = Field(
        default=None,
        description=("Detector checkpoint to load; unset means the checkpoint shipped in qc_worker/weights."),
    )
    device: Device = Field(
        default="auto",
        description="Where the detector runs: auto (CUDA when available, else CPU), cpu or cuda.",
    )

    # --- input limits and logging ---------------------------------------------------
    max_image_pixels: int = Field(
        default=100_000_000,
        gt=0,
        description="Largest image accepted, in pixels (width x height); bigger input is refused.",
    )
    max_image_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Largest image file read, in bytes; bigger files are refused before download.",
    )
    log_level: LogLevel = Field(default="INFO", description="Logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text for people, json (one object per line) for log collectors.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of a worker's Prometheus /metrics endpoint; unset: no endpoint.",
    )

    # --- screening ------------------------------------------------------------------
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Detector arithmetic: auto = bf16 autocast where the hardware has bf16 "
        "(GPUs; CPUs with AVX512-BF16 or AMX, there about 2.5x faster than fp32 with "
        "near-identical maps), fp16 on GPUs without bf16, else fp32 (bf16 on an AVX2-only "
        "CPU is about 10x slower than fp32).",
    )
    batch_size: int = Field(default=8, ge=1, description="Images per forward pass.")
    analysis_threads: int | None = Field(
        default=None,
        ge=1,
        description="Images of a batch analysed at once (faces, regions, crops) after its forward pass; "
        "unset: as many as the forward pass's torch threads (OMP_NUM_THREADS, else every core). The "
        "forward pass keeps those cores busy, the analysis of one image mostly one of them.",
    )
    write_overlays: bool = Field(
        default=True,
        description="Workers store an overlay JPEG (heat map, regions, crops) beside each screening.",
    )
    faces: FaceConfig = Field(default_factory=FaceConfig, description="Face detection.")
    regions: RegionConfig = Field(default_factory=RegionConfig, description="Region and image verdicts.")
    observable: ObservableConfig = Field(
        default_factory=ObservableConfig, description="Where blur can be seen (textured pixels)."
    )
    roi: RoiConfig = Field(default_factory=RoiConfig, description="Crop-safe ROI search.")

    # --- validation -----------------------------------------------------------------
    @field_validator(
        "s3_endpoint_url",
        "s3_bucket",
        "s3_access_key_id",
        "s3_secret_access_key",
        "model_path",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @field_validator("device", mode="before")
    @classmethod
    def _lower_device(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        value = value.strip()
        scheme = urlsplit(value).scheme if "://" in value else ""
        if not scheme:
            raise ValueError(
                "must be a SQLAlchemy URL such as sqlite:///./qc.db or postgresql+psycopg2://user:password@host:5432/qc"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        value = value.strip()
        scheme = urlsplit(value).scheme if "://" in value else ""
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_s3_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        return value

    @field_validator("s3_region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty (e.g. us-east-1)")
        return value

    @field_validator("rescan_at")
    @classmethod
    def _check_rescan_at(cls, value: str) -> str:
        value = value.strip()
        if not _HHMM.match(value):
            raise ValueError("must be a time HH:MM in UTC, e.g. 03:00")
        return value

    @model_validator(mode="after")
    def _tasks_fit_visibility(self) -> Settings:
        # Redis redelivers a task that is still unacknowledged after the visibility timeout,
        # so a task allowed to run longer than half of it could run twice at once.
        if self.task_time_limit_s * 2 > self.visibility_timeout_s:
            raise ValueError(
                f"QC_TASK_TIME_LIMIT_S ({self.task_time_limit_s}) must be at most half of "
                f"QC_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s})"
            )
        # A retry waits in the worker, unacknowledged, until its countdown (at most the cap;
        # the 1.5 is a margin) ends: longer than the visibility timeout and Redis hands it out twice.
        if self.retry_backoff_max_s * 1.5 >= self.visibility_timeout_s:
            raise ValueError(
                f"QC_RETRY_BACKOFF_MAX_S ({self.retry_backoff_max_s}) x 1.5 must stay below "
                f"QC_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s})"
            )
        return self

    # --- helpers --------------------------------------------------------------------
    @property
    def storage_kind(self) -> Literal["s3", "local"]:
        """``"s3"`` when a bucket is configured, else ``"local"``."""
        return "s3" if self.s3_bucket else "local"

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field`` (``device`` -> ``QC_DEVICE``)."""
        return f"{ENV_PREFIX}{field}".upper()

    def redacted(self) -> dict[str, Any]:
        """All settings as JSON-ready values, secrets masked.

        Masked: any field whose name contains password, secret, key (not key_prefix) or
        token (when set),
        every :class:`~pydantic.SecretStr`, and the password in any URL value.
        """
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                out[name] = None
            elif isinstance(value, SecretStr) or is_sensitive_name(name):
                out[name] = REDACTED
            elif isinstance(value, Path):
                out[name] = str(value)
            elif isinstance(value, str):
                out[name] = redact_url(value) if "://" in value else value
            elif isinstance(value, BaseModel):
                # Screening sections hold thresholds, never secrets.
                out[name] = value.model_dump(mode="json")
            else:
                out[name] = value
        return out

    def __repr_args__(self):  # type: ignore[override]
        # repr() and str() show the redacted values, so a logged Settings never leaks secrets.
        return list(self.redacted().items())


def format_validation_error(error: ValidationError) -> str:
    """A short, human message for a bad configuration, naming the environment variables."""
    lines = ["invalid configuration:"]
    for item in error.errors():
        field = ".".join(str(p) for p in item.get("loc", ())) or "(settings)"
        env = Settings.env_name(field) if field in Settings.model_fields else field
        given = item.get("input")
        shown = ""
        if isinstance(given, (str, int, float)) and not is_sensitive_name(field):
            shown_value = redact_url(given) if isinstance(given, str) else given
            shown = f" (got {shown_value!r})"
        lines.append(f"  {env}: {item.get('msg', 'invalid value')}{shown}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests: ``get_settings.cache_clear()``."""
    return Settings()


def export_process_variable(name: str, value: str) -> None:
    """Set ``name=value`` in this process's environment (inherited by its children).

    The one place that writes the process environment, for libraries configured only
    through it (prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``). Settings are never
    passed this way.
    """
    os.environ[name] = value
