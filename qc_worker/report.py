"""One self-contained HTML page of screening results for a title or a job (`qc report`).

For each image of the title (``images.title_id``, or a video of the title), of the job
(``job_items`` and ``images.job_id``) or of a local ``qc screen`` run (the images it just
screened, :func:`images_report`) the page shows:

* the thumbnail with its overlay: the stored overlay image (``screenings.overlay_uri``) when
  it can be read, else the stored regions and crops drawn onto the thumbnail by the one box
  renderer (:func:`qc_worker.overlay.draw_boxes`: red = blurred, green = sharp faces,
  labelled; crop-safe ROIs one colour per aspect ratio, labelled safe / unsafe);
* the verdict (coloured), score, worst region, face blur, the model version's name;
* the best safe crop of each aspect ratio, as a small cropped image;
* the timestamp in the video for frames;
* failed images with their ``failure_reason``; an image that cannot be read now is a
  placeholder with the reason, never an error.

The screening shown is the image's newest, by model version (highest ``model_versions.id``).
Everything is inside the one file: images are ``data:`` URIs (downscaled JPEG, so a title
of hundreds of frames stays a few tens of MB), CSS is inline, and a Content-Security-Policy
allows nothing but ``data:`` images, the page's own style block and its one tiny script
(which writes ``data-images-loaded="N/M"`` on ``<body>`` once the images have decoded, for
checks in a headless browser). Every piece of text from the database (file names, reasons,
labels) is escaped: it comes from untrusted input.

The page is the Jinja2 template ``templates/report.html.j2`` (autoescaped) and its CSS
``templates/report.css``; the rows come from :mod:`qc_worker.db.queries`. This module
decides what each card says and prepares its pictures.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

import jinja2
import numpy as np
from markupsafe import Markup
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from qc_worker.config import RegionConfig, Settings
from qc_worker.db import queries
from qc_worker.db.models import BlurRegion, CropRoi, Image, Job, Screening, Title
from qc_worker.detector.regions import Region, worst_region
from qc_worker.detector.roi import Roi
from qc_worker.images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from qc_worker.overlay import draw_boxes
from qc_worker.storage import StorageError
from qc_worker.vocabulary import ImageStatus, JobItemStatus, RegionKind

__all__ = [
    "Report",
    "ReportError",
    "ReportOptions",
    "images_report",
    "job_report",
    "open_report_store",
    "resolve_title",
    "title_report",
]

log = logging.getLogger(__name__)

TitleKey = Literal["auto", "id", "external"]
#: What became of an image, in the order the page counts them.
OUTCOMES = ("pass", "review", "reject", "failed", "unscreened")
TEMPLATES = Path(__file__).resolve().parent / "templates"


class Reader(Protocol):
    """What the report needs of a store: the bytes at a URI, or StorageError."""

    def read(self, uri: str) -> bytes: ...


class ReportError(LookupError):
    """The title or job asked for does not exist (or the key is ambiguous); says which."""


@dataclass(frozen=True)
class ReportOptions:
    thumb_side: int = 480  # longest side of a thumbnail, pixels
    crop_side: int = 160  # longest side of a crop preview
    jpeg_quality: int = 80
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are not decoded (placeholder)
    face_review_limit: float = RegionConfig().face_review_limit  # for the worst region

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportOptions:
        return cls(
            max_pixels=settings.max_image_pixels,
            face_review_limit=settings.regions.face_review_limit,
        )


@dataclass
class Report:
    """A rendered page: its HTML, what it is about, and how many images of each outcome."""

    html: str
    subject: str
    counts: dict[str, int]

    def counts_text(self) -> str:
        """``"3 pass, 1 reject, 2 failed"`` (outcomes that occur, in a fixed order)."""
        return ", ".join(f"{self.counts[k]} {k}" for k in OUTCOMES if self.counts.get(k))

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path


def open_report_store(settings: Settings) -> Reader:
    """The store images and overlays are read from (local paths and ``s3://`` URIs): the one
    place the report picks it. Not confined to the local root: like ``qc screen``, the
    report runs for a person, on paths the database recorded."""
    from qc_worker.storage import open_store

    return open_store(settings, confine=False)


# --- what is reported --------------------------------------------------------------------
@dataclass
class _Entry:
    uri: str
    image: Image | None = None
    screening: Screening | None = None
    failure: str | None = None  # images.failure_reason or job_items.reason
    pending: bool = False
    timestamp_s: float | None = None
    frame_index: int | None = None

    @property
    def outcome(self) -> str:
        if self.failure is not None:
            return "failed"
        if self.screening is not None:
            return _enum_text(self.screening.verdict)
        return "unscreened"


def resolve_title(session: Session, key: str, by: TitleKey = "auto") -> Title:
    """The title whose ``id`` (``by="id"``), ``external_id`` (``"external"``) or either
    (``"auto"``: refused as ambiguous when they name two different titles) is ``key``."""
    key = key.strip()
    by_id = by_ext = None
    if by in ("auto", "id") and key.isdigit():
        by_id = queries.title_by_id(session, int(key))
    if by in ("auto", "external"):
        by_ext = queries.title_by_external_id(session, key)
    if by_id is not None and by_ext is not None and by_id.id != by_ext.id:
        raise ReportError(
            f"{key!r} is title id {by_id.id} and also the external id of title {by_ext.id}: "
            "say which with --by id or --by external"
        )
    title = by_id or by_ext
    if title is None:
        what = {"auto": "id or external id", "id": "id", "external": "external id"}[by]
        if by == "id" and not key.isdigit():
            raise ReportError(f"title id must be a whole number, got {key!r}")
        raise ReportError(f"no title with {what} {key!r}")
    return title


def title_report(
    session: Session,
    key: str,
    store: Reader,
    *,
    by: TitleKey = "auto",
    options: ReportOptions = ReportOptions(),
) -> Report:
    """The report of every image of a title (by id or external id, see :func:`resolve_title`)."""
    title = resolve_title(session, key, by)
    entries = [_image_entry(i) for i in queries.title_images(session, title.id)]
    entries.sort(key=_frame_order)
    name = f" \N{EM DASH} {title.name}" if title.name else ""
    subject = f"title {title.id} ({title.external_id}){name}"
    facts = [
        ("title id", str(title.id)),
        ("external id", title.external_id),
        ("name", title.name or "-"),
    ]
    return _render(session, f"Title {title.external_id}{name}", subject, facts, entries, store, options)


def job_report(session: Session, job_id: int, store: Reader, *, options: ReportOptions = ReportOptions()) -> Report:
    """The report of every image of a job: its job items, in order, then any other image
    recorded with the job's id."""
    job = session.get(Job, job_id)
    if job is None:
        raise ReportError(f"no job with id {job_id}")
    items = queries.job_items(session, job)
    images = queries.job_images(session, job, (i.image_id for i in items if i.image_id is not None))
    entries: list[_Entry] = []
    seen: set[int] = set()
    for item in items:
        image = images.get(item.image_id) if item.image_id is not None else None
        if image is not None:
            if image.id in seen:
                continue
            seen.add(image.id)
            entry = _image_entry(image)
        else:
            entry = _Entry(uri=item.uri, pending=item.status == JobItemStatus.PENDING)
        if entry.failure is None and item.status == JobItemStatus.FAILED:
            entry.failure = item.reason or "failed (no reason recorded)"
        entry.timestamp_s = entry.timestamp_s if entry.timestamp_s is not None else item.timestamp_s
        entry.frame_index = entry.frame_index if entry.frame_index is not None else item.frame_index
        entries.append(entry)
    rest = [_image_entry(i) for i in images.values() if i.id not in seen]
    entries += sorted(rest, key=_frame_order)
    subject = f"job {job.id} ({job.kind}, {_enum_text(job.status)})"
    facts = [
        ("job id", str(job.id)),
        ("kind", job.kind),
        ("status", _enum_text(job.status)),
        ("items", f"{job.items_done} done, {job.items_failed} failed of {job.items_total}"),
    ]
    if job.title is not None:
        facts.append(("title", f"{job.title.external_id} ({job.title.name or '-'})"))
    if job.error:
        facts.append(("error", job.error))
    return _render(session, f"Job {job.id}", subject, facts, entries, store, options)


def images_report(
    session: Session,
    image_ids: Sequence[int],
    store: Reader,
    *,
    heading: str,
    facts: Sequence[tuple[str, str]] = (),
    options: ReportOptions = ReportOptions(),
) -> Report:
    """The report of the given images in the given order (an image named twice shows once):
    ``qc screen --report`` writes one for a local run, which has no title or job."""
    images = queries.images_by_id(session, image_ids)
    entries = [_image_entry(images[i]) for i in dict.fromkeys(image_ids) if i in images]
    subject = f"{heading} ({len(entries)} images)"
    return _render(session, heading, subject, [*facts, ("images", str(len(entries)))], entries, store, options)


def _image_entry(image: Image) -> _Entry:
    failure = None
    if image.status == ImageStatus.FAILED:
        failure = image.failure_reason or "failed (no reason recorded)"
    return _Entry(
        uri=image.uri,
        image=image,
        failure=failure,
        timestamp_s=image.timestamp_s,
        frame_index=image.frame_index,
    )


def _frame_order(e: _Entry) -> tuple:
    return (
        e.timestamp_s is None,
        e.timestamp_s or 0.0,
        e.frame_index or 0,
        e.uri,
        e.image.id if e.image else 0,
    )


def _attach_newest_screenings(session: Session, entries: Sequence[_Entry]) -> None:
    by_image = {e.image.id: e for e in entries if e.image is not None}
    for image_id, screening in queries.newest_screenings(session, by_image).items():
        by_image[image_id].screening = screening


# --- page --------------------------------------------------------------------------------
_STATUS_SCRIPT = (
    "addEventListener('load',function(){var m=document.images,n=0,i;"
    "for(i=0;i<m.length;i++){if(m[i].complete&&m[i].naturalWidth>0){n++}}"
    "document.body.setAttribute('data-images-loaded',n+'/'+m.length)});"
)


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def _page() -> tuple[jinja2.Template, Markup, Markup]:
    """The page template, its CSS and the Content-Security-Policy that allows exactly them."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    csp = (
        f"default-src 'none'; img-src data:; style-src {_csp_hash(css)}; "
        f"script-src {_csp_hash(_STATUS_SCRIPT)}; base-uri 'none'; form-action 'none'"
    )
    return env.get_template("report.html.j2"), Markup(css), Markup(csp)


@dataclass
class _Picture:
    """The thumbnail slot of a card: an embedded JPEG (drawn or stored overlay) or a placeholder."""

    kind: Literal["drawn", "overlay", "placeholder"]
    text: str = ""
    src: str = ""
    alt: str = ""
    width: int = 0
    height: int = 0


@dataclass
class _Crop:
    aspect: str
    src: str
    width: int
    height: int
    caption: str


@dataclass
class _Card:
    """What one image's card says; the template lays it out and escapes every string."""

    outcome: str
    name: str
    uri: str
    image_id: int | None
    picture: _Picture
    #: (label, parts): a part is (CSS class or None, text); parts are joined by ", ".
    rows: list[tuple[str, list[tuple[str | None, str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    crops: list[_Crop] = field(default_factory=list)
    missing: str = ""
    broken: bool = False


def _render(
    session: Session,
    heading: str,
    subject: str,
    facts: Sequence[tuple[str, str]],
    entries: Sequence[_Entry],
    store: Reader,
    options: ReportOptions,
) -> Report:
    _attach_newest_screenings(session, entries)
    counts = {k: 0 for k in OUTCOMES}
    models: dict[str, int] = {}
    for e in entries:
        counts[e.outcome] += 1
        if e.screening is not None and e.failure is None:
            name = e.screening.model_version.name
            models[name] = models.get(name, 0) + 1
    counts["images"] = len(entries)
    cards = [_guarded_card(e, store, options) for e in entries]
    counts["unreadable"] = sum(1 for c in cards if c[1])
    template, css, csp = _page()
    page = template.render(
        csp=csp,
        css=css,
        script=Markup(_STATUS_SCRIPT),
        heading=heading,
        subject=subject,
        facts=facts,
        pills=[(k, counts[k]) for k in OUTCOMES if counts[k]],
        models=", ".join(f"{n} ({c})" for n, c in sorted(models.items())),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        cards=[c[0] for c in cards],
    )
    return Report(page, subject, counts)


# --- one image ---------------------------------------------------------------------------
def _guarded_card(e: _Entry, store: Reader, options: ReportOptions) -> tuple[_Card, bool]:
    """:func:`_card`, or a card that says what went wrong: one odd image or store error
    (an S3 client failing in a way nobody foresaw) never costs the whole page."""
    try:
        return _card(e, store, options)
    except Exception as exc:  # the page must still be written
        log.exception("report: cannot show %s", e.uri)
        picture = _Picture("placeholder", text=f"cannot show this image: {exc}")
        image_id = e.image.id if e.image is not None else None
        return _Card(e.outcome, Path(e.uri).name or e.uri, e.uri, image_id, picture, broken=True), True


def _card(e: _Entry, store: Reader, options: ReportOptions) -> tuple[_Card, bool]:
    """One image's card, and whether its image (not failed at screening) cannot be read now."""
    s = e.screening if e.failure is None else None
    image = e.image
    card = _Card(
        e.outcome, Path(e.uri).name or e.uri, e.uri, image.id if image is not None else None, _Picture("placeholder")
    )
    unreadable = False
    if e.failure is not None:
        card.rows.append(("failure", [("reason", e.failure)]))
        card.picture = _Picture("placeholder", text=f"not screened: {e.failure}")
    else:
        unreadable = _pictures(card, e, s, store, options)
    if e.timestamp_s is not None or e.frame_index is not None:
        parts = []
        if e.timestamp_s is not None:
            parts.append(_timestamp(e.timestamp_s))
        if e.frame_index is not None:
            parts.append(f"frame {e.frame_index}")
        card.rows.append(("in video", [(None, " / ".join(parts))]))
    if s is not None:
        scores = s.scores or {}
        score = scores.get("score")
        card.rows.append(("score", [(None, f"{score:.2f}" if isinstance(score, (int, float)) else "-")]))
        bf = scores.get("blurred_fraction")
        if isinstance(bf, (int, float)):
            card.rows.append(("blurred area", [(None, f"{bf:.1%}")]))
        card.rows.append(("worst region", [(None, _worst_text(worst_region(s.regions, options.face_review_limit)))]))
        card.rows.append(("face blur", _faces(s.regions)))
        reasons = scores.get("reasons") or []
        if isinstance(reasons, list) and reasons:
            card.rows.append(("why", [(None, "; ".join(str(r) for r in reasons))]))
        card.rows.append(("model", [(None, s.model_version.name)]))
        card.rows.append(("screened", [(None, s.updated_at.strftime("%Y-%m-%d %H:%M UTC"))]))
    elif e.failure is None:
        card.rows.append(("screening", [(None, "pending" if e.pending else "not screened yet")]))
    if image is not None and image.width and image.height:
        card.rows.append(("size", [(None, f"{image.width}\N{MULTIPLICATION SIGN}{image.height}")]))
    if image is not None and image.vendor:
        card.rows.append(("vendor", [(None, image.vendor)]))
    return card, unreadable


def _pictures(card: _Card, e: _Entry, s: Screening | None, store: Reader, options: ReportOptions) -> bool:
    """Fill the card's thumbnail, notes and crops; True when the image cannot be read now."""
    try:
        data = store.read(e.uri)
        rgb = decode_image(data, options.max_pixels)
    except (StorageError, ImageError, OSError) as exc:
        log.warning("report: cannot show %s: %s", e.uri, exc)
        card.picture = _Picture("placeholder", text=f"image not readable: {exc}")
        return True
    if e.image is not None and e.image.sha256 and hashlib.sha256(data).hexdigest() != e.image.sha256:
        card.notes.append("The file has changed since it was screened: boxes may not match.")
    base = PILImage.fromarray(rgb)
    thumb = None
    kind: Literal["drawn", "overlay"] = "drawn"
    if s is not None and s.overlay_uri:
        try:
            overlay = decode_image(store.read(s.overlay_uri), options.max_pixels)
            thumb = _thumbnail(PILImage.fromarray(overlay), options.thumb_side)
            kind = "overlay"
        except (StorageError, ImageError, OSError) as exc:
            card.notes.append(f"Stored overlay not readable ({exc}); boxes drawn instead.")
    if thumb is None:
        thumb = _thumbnail(base, options.thumb_side)
        if s is not None:
            thumb = _drawn(thumb, base.size, s.regions, s.rois)
    card.picture = _Picture(
        kind,
        src=_data_uri(thumb, options.jpeg_quality),
        alt=f"{Path(e.uri).name} ({kind})",
        width=thumb.width,
        height=thumb.height,
    )
    if s is not None:
        card.crops, card.missing = _crops(base, s.rois, options)
    return False


def _thumbnail(im: PILImage.Image, side: int) -> PILImage.Image:
    im = im.convert("RGB")
    im.thumbnail((side, side), PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    return im


def _data_uri(im: PILImage.Image, quality: int) -> str:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    sec, ms = divmod(rest, 1000)
    return f"{h}:{m:02d}:{sec:02d}.{ms:03d}"


# --- regions and crops -------------------------------------------------------------------
def _box(obj: BlurRegion | CropRoi) -> tuple[int, int, int, int]:
    return obj.x0, obj.y0, obj.x1, obj.y1


def _drawn(
    thumb: PILImage.Image, size: tuple[int, int], regions: Sequence[BlurRegion], rois: Sequence[CropRoi]
) -> PILImage.Image:
    """The thumbnail with the stored regions and crops drawn by the overlay's renderer."""
    sx, sy = thumb.width / max(size[0], 1), thumb.height / max(size[1], 1)

    def scaled(obj: BlurRegion | CropRoi) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = _box(obj)
        return round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)

    faces = 0
    drawn_regions = []
    for r in regions:
        faces += r.kind == RegionKind.FACE
        label = r.label or (f"face {faces}" if r.kind == RegionKind.FACE else r.kind)
        drawn_regions.append(
            Region(
                r.kind,
                label,
                scaled(r),
                r.area_fraction,
                r.coverage,
                r.mean_probability,
                r.mean_intensity,
                r.verdict,
                r.confidence,
            )
        )
    drawn_rois = [
        Roi(r.aspect, scaled(r), r.blur_fraction, r.safe, r.area_fraction, r.keeps_faces, r.reason) for r in rois
    ]
    return PILImage.fromarray(draw_boxes(np.array(thumb), drawn_regions, drawn_rois, thickness=2))


def _aspects(rois: Sequence[CropRoi]) -> list[str]:
    return list(dict.fromkeys(r.aspect for r in rois))


def _best_crops(rois: Sequence[CropRoi]) -> list[tuple[str, CropRoi | None, CropRoi | None]]:
    """Per aspect (in stored order): (aspect, best safe crop or None, best crop of any kind)."""
    out = []
    for aspect in _aspects(rois):
        mine = [r for r in rois if r.aspect == aspect]

        def rank(r: CropRoi) -> tuple[float, float]:
            return ((r.x1 - r.x0) * (r.y1 - r.y0), -(r.blur_fraction or 0.0))

        safe = [r for r in mine if r.safe]
        best_any = min(mine, key=lambda r: (r.blur_fraction or 0.0, -rank(r)[0]))
        out.append((aspect, max(safe, key=rank) if safe else None, best_any))
    return out


def _crops(base: PILImage.Image, rois: Sequence[CropRoi], options: ReportOptions) -> tuple[list[_Crop], str]:
    """The best safe crop of each aspect as a small image, and what to say of aspects with none."""
    figures, missing = [], []
    for aspect, safe, best in _best_crops(rois):
        if safe is None:
            missing.append(f"{aspect} ({_unsafe_why(best)})")
            continue
        x0, y0 = max(0, safe.x0), max(0, safe.y0)
        x1, y1 = min(base.width, safe.x1), min(base.height, safe.y1)
        if x1 <= x0 or y1 <= y0:
            missing.append(f"{aspect} (stored crop lies outside the image)")
            continue
        crop = _thumbnail(base.crop((x0, y0, x1, y1)), options.crop_side)
        blur = f", {safe.blur_fraction:.0%} blur" if safe.blur_fraction is not None else ""
        caption = f"{aspect} safe{blur} ({x1 - x0}\N{MULTIPLICATION SIGN}{y1 - y0})"
        figures.append(_Crop(aspect, _data_uri(crop, options.jpeg_quality), crop.width, crop.height, caption))
    return figures, "; ".join(missing)


def _unsafe_why(best: CropRoi | None) -> str:
    if best is None:
        return "none stored"
    if best.reason:
        return best.reason
    if best.keeps_faces is False:
        return "every crop cuts a face"
    if best.blur_fraction is not None:
        return f"the best has {best.blur_fraction:.0%} blur"
    return "unsafe"


def _worst_text(region: BlurRegion | None) -> str:
    if region is None:
        return "none"
    label = region.label or region.kind
    if region.kind == "component":
        area = f"{region.area_fraction:.1%} of image" if region.area_fraction is not None else "?"
        p = f", p={region.mean_probability:.2f}" if region.mean_probability is not None else ""
        return f"{label} ({area}{p})"
    cov = f"{region.coverage:.0%} blurred" if region.coverage is not None else "?"
    return f"{label} ({cov})"


def _faces(regions: Sequence[BlurRegion]) -> list[tuple[str | None, str]]:
    faces = [r for r in regions if r.kind == RegionKind.FACE]
    if not faces:
        return [(None, "no faces found")]
    parts: list[tuple[str | None, str]] = []
    for i, f in enumerate(faces, 1):
        cov = f"{f.coverage:.0%} blurred" if f.coverage is not None else "?"
        parts.append((_enum_text(f.verdict), f"{f.label or f'face {i}'}: {cov}"))
    return parts


def _enum_text(value: object) -> str:
    return str(getattr(value, "value", value))
