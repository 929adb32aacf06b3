"""The results database: SQLAlchemy 2.0 models, engines and sessions, idempotent writes.

* :mod:`qc_worker.db.models` — the ORM models (titles, videos, jobs, job_items, images,
  model_versions, screenings, blur_regions, crop_rois) and their enumerations;
* :mod:`qc_worker.db.engine` — :func:`make_engine`, :func:`session_scope` and friends;
* :mod:`qc_worker.db.writes` — idempotent writes (:func:`save_screening`, ...);
* :mod:`qc_worker.db.rows` — :func:`~qc_worker.db.rows.columns`, a detector or pipeline value
  (Region, Roi, ImageOrigin) as its table's row;
* :mod:`qc_worker.db.migrate` — Alembic from Python (:func:`upgrade`, :func:`downgrade`,
  :func:`current`); imported on demand, as it pulls in Alembic.

The schema itself is defined by the Alembic revisions in ``migrations/``.
"""

from qc_worker.db.engine import (
    dispose_engines,
    get_engine,
    get_sessionmaker,
    make_engine,
    make_sessionmaker,
    session_scope,
)
from qc_worker.db.models import (
    Base,
    BlurRegion,
    CropRoi,
    Image,
    ImageStatus,
    Job,
    JobItem,
    JobItemStatus,
    JobKind,
    JobStatus,
    ModelVersion,
    Screening,
    SourceKind,
    Title,
    Verdict,
    Video,
)
from qc_worker.db.writes import (
    get_or_create_model_version,
    record_image_failure,
    save_screening,
    upsert_image,
)

__all__ = [
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
    "Verdict",
    "Video",
    "dispose_engines",
    "get_engine",
    "get_or_create_model_version",
    "get_sessionmaker",
    "make_engine",
    "make_sessionmaker",
    "record_image_failure",
    "save_screening",
    "session_scope",
    "upsert_image",
]
