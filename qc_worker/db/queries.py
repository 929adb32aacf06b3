"""Reads for people: the rows a title's or a job's report shows (``qc report``).

Kept beside the models so the report module builds pages and never writes SQL, and so
another reader (an API, a notebook) can ask the same questions.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from qc_worker.db.models import Image, Job, JobItem, Screening, Title, Video

__all__ = [
    "images_by_id",
    "job_images",
    "job_items",
    "newest_screenings",
    "title_by_external_id",
    "title_by_id",
    "title_images",
]

#: Ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500


def title_by_id(session: Session, title_id: int) -> Title | None:
    return session.get(Title, title_id)


def title_by_external_id(session: Session, external_id: str) -> Title | None:
    return session.execute(select(Title).where(Title.external_id == external_id)).scalar_one_or_none()


def title_images(session: Session, title_id: int) -> list[Image]:
    """Every image of a title: recorded with the title, or sampled from one of its videos."""
    videos = select(Video.id).where(Video.title_id == title_id)
    query = select(Image).where(or_(Image.title_id == title_id, Image.video_id.in_(videos)))
    return list(session.execute(query).scalars())


def job_items(session: Session, job: Job) -> list[JobItem]:
    """The job's items in the order they were made."""
    return list(session.execute(select(JobItem).where(JobItem.job_id == job.id).order_by(JobItem.id)).scalars())


def job_images(session: Session, job: Job, image_ids: Iterable[int]) -> dict[int, Image]:
    """Images recorded with the job's id or named by its items, by id."""
    query = select(Image).where(or_(Image.job_id == job.id, Image.id.in_(list(image_ids))))
    return {i.id: i for i in session.execute(query).scalars()}


def images_by_id(session: Session, image_ids: Iterable[int]) -> dict[int, Image]:
    """The images with these ids, by id (ids with no image are left out)."""
    ids = list(dict.fromkeys(image_ids))
    found: dict[int, Image] = {}
    for start in range(0, len(ids), _CHUNK):
        found.update(
            (i.id, i) for i in session.execute(select(Image).where(Image.id.in_(ids[start : start + _CHUNK]))).scalars()
        )
    return found


def newest_screenings(session: Session, image_ids: Iterable[int]) -> dict[int, Screening]:
    """Each image's newest screening (highest model version id), its regions, crops and
    model version loaded."""
    ids = list(image_ids)
    newest: dict[int, Screening] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(Screening)
            .where(Screening.image_id.in_(ids[start : start + _CHUNK]))
            .options(
                selectinload(Screening.regions),
                selectinload(Screening.rois),
                selectinload(Screening.model_version),
            )
            .order_by(Screening.image_id, Screening.model_version_id.desc())
        ).scalars()
        for screening in rows:
            newest.setdefault(screening.image_id, screening)
    return newest
