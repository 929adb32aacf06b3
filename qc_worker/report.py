"""One self-contained HTML page of screening results for a title or a job (`qc report`).

For each image of the title (``images.title_id``, or a video of the title) or of the job
(``job_items`` and ``images.job_id``) the page shows:

* the thumbnail with its overlay: the stored overlay image (``screenings.overlay_uri``) when
  it can be read, else the stored regions and crops drawn onto the thumbnail with Pillow
  (red = blurred, green = sharp, faces labelled; crop-safe ROIs dashed, one colour per
  aspect ratio, labelled safe / unsafe);
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
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from qc_worker.config import RegionConfig, Settings
from qc_worker.db.models import BlurRegion, CropRoi, Image, Job, JobItem, Screening, Title, Video
from qc_worker.detector.regions import worst_region
from qc_worker.images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from qc_worker.storage import StorageError
from qc_worker.vocabulary import ImageStatus, JobItemStatus

__all__ = [
    "Report",
    "ReportError",
    "ReportOptions",
    "job_report",
    "open_report_store",
    "resolve_title",
    "title_report",
]

log = logging.getLogger(__name__)

TitleKey = Literal["auto", "id", "external"]
#: What became of an image, in the order the page counts them.
OUTCOMES = ("pass", "review", "reject", "failed", "unscreened")


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
        by_id = session.get(Title, int(key))
    if by in ("auto", "external"):
        by_ext = session.execute(select(Title).where(Title.external_id == key)).scalar_one_or_none()
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
    videos = select(Video.id).where(Video.title_id == title.id)
    images = (
        session.execute(select(Image).where(or_(Image.title_id == title.id, Image.video_id.in_(videos))))
        .scalars()
        .all()
    )
    entries = [_image_entry(i) for i in images]
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
    items = session.execute(select(JobItem).where(JobItem.job_id == job.id).order_by(JobItem.id)).scalars().all()
    item_image_ids = [i.image_id for i in items if i.image_id is not None]
    images = {
        i.id: i
        for i in session.execute(
            select(Image).where(or_(Image.job_id == job.id, Image.id.in_(item_image_ids)))
        ).scalars()
    }
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
    """Each entry's newest screening (highest model version id), regions/ROIs loaded."""
    by_image = {e.image.id: e for e in entries if e.image is not None}
    ids = list(by_image)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.execute(
            select(Screening)
            .where(Screening.image_id.in_(chunk))
            .options(
                selectinload(Screening.regions),
                selectinload(Screening.rois),
                selectinload(Screening.model_version),
            )
            .order_by(Screening.image_id, Screening.model_version_id.desc())
        ).scalars()
        for screening in rows:
            entry = by_image[screening.image_id]
            if entry.screening is None:
                entry.screening = screening


# --- page --------------------------------------------------------------------------------
_STATUS_SCRIPT = (
    "addEventListener('load',function(){var m=document.images,n=0,i;"
    "for(i=0;i<m.length;i++){if(m[i].complete&&m[i].naturalWidth>0){n++}}"
    "document.body.setAttribute('data-images-loaded',n+'/'+m.length)});"
)
_CSS = """
:root{--pass:#1a7f37;--review:#b7791f;--reject:#c62828;--failed:#6b3fa0;--unscreened:#6b7280}
*{box-sizing:border-box}
body{margin:0;padding:20px 24px;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;
background:#eef0f3;color:#1d1f23}
h1{font-size:22px;margin:0 0 4px}
header{margin-bottom:16px}
.facts{display:flex;flex-wrap:wrap;gap:4px 18px;margin:6px 0;color:#444}
.facts b{color:#1d1f23;font-weight:600}
.counts{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}
.pill{border-radius:999px;padding:2px 10px;color:#fff;font-weight:600;font-size:13px}
.pill.total{background:#374151}
.pass .badge,.pill.pass{background:var(--pass)}
.review .badge,.pill.review{background:var(--review)}
.reject .badge,.pill.reject{background:var(--reject)}
.failed .badge,.pill.failed{background:var(--failed)}
.unscreened .badge,.pill.unscreened{background:var(--unscreened)}
.legend{color:#555;font-size:12.5px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
.card{background:#fff;border-radius:8px;padding:12px 14px;border-top:6px solid var(--unscreened);
box-shadow:0 1px 3px rgba(0,0,0,.12);overflow:hidden}
.card.pass{border-top-color:var(--pass)}
.card.review{border-top-color:var(--review)}
.card.reject{border-top-color:var(--reject)}
.card.failed{border-top-color:var(--failed)}
.head{display:flex;align-items:baseline;gap:10px;margin-bottom:4px}
.name{font-weight:600;font-size:15px;word-break:break-all;flex:1}
.badge{border-radius:4px;padding:1px 8px;color:#fff;font-weight:700;text-transform:uppercase;
font-size:12px;letter-spacing:.04em}
.uri{font:12px ui-monospace,Menlo,Consolas,monospace;color:#666;word-break:break-all}
.thumb{margin:8px 0}
.thumb img{display:block;max-width:100%;height:auto;border-radius:4px}
.placeholder{display:flex;align-items:center;justify-content:center;text-align:center;
min-height:180px;padding:16px;border-radius:4px;color:#4b5563;word-break:break-word;
background:repeating-linear-gradient(45deg,#f3f4f6 0 12px,#e5e7eb 12px 24px)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}
dt{color:#6b7280}
dd{margin:0;word-break:break-word}
.blurred{color:var(--reject);font-weight:600}
.sharp{color:var(--pass)}
.note{color:#92400e;font-size:12.5px}
.reason{color:var(--failed);font-weight:600;word-break:break-word}
.crops{display:flex;flex-wrap:wrap;gap:10px;margin-top:6px}
.crops figure{margin:0;font-size:12px;color:#444}
.crops img{display:block;max-height:120px;max-width:200px;border-radius:3px;margin-bottom:2px}
.nocrop{font-size:12px;color:#6b7280;margin-top:4px}
footer{margin-top:20px;color:#6b7280;font-size:12px}
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_CSP = (
    f"default-src 'none'; img-src data:; style-src {_csp_hash(_CSS)}; "
    f"script-src {_csp_hash(_STATUS_SCRIPT)}; base-uri 'none'; form-action 'none'"
)


def _e(value: object) -> str:
    """Escaped text for HTML content and quoted attribute values."""
    return html.escape(str(value), quote=True)


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
    pills = [f'<span class="pill total">{len(entries)} images</span>'] + [
        f'<span class="pill {k}">{counts[k]} {k}</span>' for k in OUTCOMES if counts[k]
    ]
    model_text = ", ".join(f"{_e(n)} ({c})" for n, c in sorted(models.items())) or "none"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = "\n".join(c[0] for c in cards) or "<p>No images recorded.</p>"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Artwork QC report: {_e(heading)}</title>
<style>{_CSS}</style>
</head>
<body data-images="{len(entries)}">
<header>
<h1>Artwork QC report: {_e(heading)}</h1>
<div class="facts">{"".join(f"<span>{_e(k)}: <b>{_e(v)}</b></span>" for k, v in facts)}</div>
<div class="counts">{"".join(pills)}</div>
<div class="facts"><span>model versions: <b>{model_text}</b></span>
<span>generated: <b>{generated}</b></span></div>
<div class="legend">Boxes drawn on thumbnails: red = blurred region, green = sharp region
(faces labelled with their blurred share); dashed = best crop of each aspect ratio, marked safe
or unsafe. An overlay stored at screening time (blur heat map) is shown instead when it can be
read.</div>
</header>
<main class="grid">
{body}
</main>
<footer>{_e(subject)}; newest screening per image (highest model version). Self-contained:
every image is embedded.</footer>
<script>{_STATUS_SCRIPT}</script>
</body>
</html>
"""
    return Report(page, subject, counts)


# --- one image ---------------------------------------------------------------------------
def _guarded_card(e: _Entry, store: Reader, options: ReportOptions) -> tuple[str, bool]:
    """:func:`_card`, or a card that says what went wrong: one odd image or store error
    (an S3 client failing in a way nobody foresaw) never costs the whole page."""
    try:
        return _card(e, store, options)
    except Exception as exc:  # the page must still be written
        log.exception("report: cannot show %s", e.uri)
        outcome = e.outcome
        ident = f' data-image-id="{e.image.id}"' if e.image is not None else ""
        card = (
            f'<section class="card {outcome}" data-outcome="{outcome}"{ident}>'
            f'<div class="head"><span class="name">{_e(Path(e.uri).name or e.uri)}</span>'
            f'<span class="badge">{_e(outcome)}</span></div><div class="uri">{_e(e.uri)}</div>'
            f'<div class="thumb">{_placeholder(f"cannot show this image: {exc}")}</div>'
            "</section>"
        )
        return card, True


def _card(e: _Entry, store: Reader, options: ReportOptions) -> tuple[str, bool]:
    """One image's card, and whether its image (not failed at screening) cannot be read now."""
    outcome = e.outcome
    name = Path(e.uri).name or e.uri
    s = e.screening if e.failure is None else None
    rows: list[tuple[str, str]] = []  # (label, already-escaped HTML)
    notes: list[str] = []
    picture = ""
    crops_html = ""
    unreadable = False
    if e.failure is not None:
        rows.append(("failure", f'<span class="reason">{_e(e.failure)}</span>'))
        picture = _placeholder(f"not screened: {e.failure}")
    else:
        shown = _pictures(e, s, store, options)
        picture, crops_html, notes, unreadable = shown
    if e.timestamp_s is not None or e.frame_index is not None:
        parts = []
        if e.timestamp_s is not None:
            parts.append(_timestamp(e.timestamp_s))
        if e.frame_index is not None:
            parts.append(f"frame {e.frame_index}")
        rows.append(("in video", _e(" / ".join(parts))))
    if s is not None:
        scores = s.scores or {}
        score = scores.get("score")
        rows.append(("score", _e(f"{score:.2f}" if isinstance(score, (int, float)) else "-")))
        bf = scores.get("blurred_fraction")
        if isinstance(bf, (int, float)):
            rows.append(("blurred area", _e(f"{bf:.1%}")))
        rows.append(("worst region", _e(_worst_text(worst_region(s.regions, options.face_review_limit)))))
        rows.append(("face blur", _faces_html(s.regions)))
        reasons = scores.get("reasons") or []
        if isinstance(reasons, list) and reasons:
            rows.append(("why", _e("; ".join(str(r) for r in reasons))))
        rows.append(("model", _e(s.model_version.name)))
        rows.append(("screened", _e(s.updated_at.strftime("%Y-%m-%d %H:%M UTC"))))
    elif e.failure is None:
        rows.append(("screening", "pending" if e.pending else "not screened yet"))
    image = e.image
    if image is not None and image.width and image.height:
        rows.append(("size", _e(f"{image.width}\N{MULTIPLICATION SIGN}{image.height}")))
    if image is not None and image.vendor:
        rows.append(("vendor", _e(image.vendor)))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    note_html = "".join(f'<div class="note">{_e(n)}</div>' for n in notes)
    ident = f' data-image-id="{image.id}"' if image is not None else ""
    card = f"""<section class="card {outcome}" data-outcome="{outcome}"{ident}>
<div class="head"><span class="name">{_e(name)}</span><span class="badge">{_e(outcome)}</span></div>
<div class="uri">{_e(e.uri)}</div>
<div class="thumb">{picture}</div>
{note_html}<dl>{dl}</dl>
{crops_html}</section>"""
    return card, unreadable


def _pictures(
    e: _Entry, s: Screening | None, store: Reader, options: ReportOptions
) -> tuple[str, str, list[str], bool]:
    """(thumbnail HTML, crops HTML, notes, unreadable) for an image that is not failed."""
    notes: list[str] = []
    try:
        data = _read(store, e.uri)
        rgb = decode_image(data, options.max_pixels)
    except (StorageError, ImageError, OSError) as exc:
        log.warning("report: cannot show %s: %s", e.uri, exc)
        return _placeholder(f"image not readable: {exc}"), "", notes, True
    if e.image is not None and e.image.sha256 and hashlib.sha256(data).hexdigest() != e.image.sha256:
        notes.append("The file has changed since it was screened: boxes may not match.")
    base = PILImage.fromarray(rgb)
    thumb = None
    kind = "drawn"
    if s is not None and s.overlay_uri:
        try:
            thumb = _thumbnail(
                PILImage.fromarray(decode_image(_read(store, s.overlay_uri), options.max_pixels)),
                options.thumb_side,
            )
            kind = "overlay"
        except (StorageError, ImageError, OSError) as exc:
            notes.append(f"Stored overlay not readable ({exc}); boxes drawn instead.")
    if thumb is None:
        thumb = _thumbnail(base, options.thumb_side)
        if s is not None:
            _draw_boxes(thumb, base.size, s.regions, s.rois)
    alt = f"{Path(e.uri).name} ({kind})"
    picture = (
        f'<img src="{_data_uri(thumb, options.jpeg_quality)}" alt="{_e(alt)}" '
        f'width="{thumb.width}" height="{thumb.height}" data-kind="{kind}">'
    )
    crops_html = _crops_html(base, s.rois, options) if s is not None else ""
    return picture, crops_html, notes, False


def _read(store: Reader, uri: str) -> bytes:
    return store.read(uri)


def _placeholder(text: str) -> str:
    return f'<div class="placeholder">{_e(text)}</div>'


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
_RED = (230, 30, 30)
_GREEN = (30, 190, 60)
_ASPECT_COLOURS = [(255, 200, 0), (0, 190, 255), (255, 0, 200), (140, 90, 255), (255, 255, 255)]


def _box(obj: BlurRegion | CropRoi) -> tuple[int, int, int, int]:
    return obj.x0, obj.y0, obj.x1, obj.y1


def _aspects(rois: Iterable[CropRoi]) -> list[str]:
    return list(dict.fromkeys(r.aspect for r in rois))


def _draw_boxes(
    thumb: PILImage.Image,
    size: tuple[int, int],
    regions: Sequence[BlurRegion],
    rois: Sequence[CropRoi],
) -> None:
    """Draw regions (red blurred / green sharp; faces labelled) and ROIs (dashed) in place."""
    sx, sy = thumb.width / max(size[0], 1), thumb.height / max(size[1], 1)
    draw = ImageDraw.Draw(thumb)
    font = ImageFont.load_default()

    def scaled(box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        return x0 * sx, y0 * sy, max(x1 * sx - 1, x0 * sx), max(y1 * sy - 1, y0 * sy)

    faces = 0
    for r in regions:
        if r.kind == "grid":
            continue
        if r.kind == "foreground" and r.verdict != "blurred":
            continue
        colour = _RED if r.verdict == "blurred" else _GREEN
        x0, y0, x1, y1 = scaled(_box(r))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        if r.kind == "face":
            faces += 1
            cov = f" {r.coverage:.0%}" if r.coverage is not None else ""
            _label(draw, font, (x0, y0), f"{r.label or f'face {faces}'}{cov}", colour)
    colours = {a: _ASPECT_COLOURS[i % len(_ASPECT_COLOURS)] for i, a in enumerate(_aspects(rois))}
    for roi in rois:
        colour = colours[roi.aspect]
        x0, y0, x1, y1 = scaled(_box(roi))
        _dashed_rect(draw, (x0, y0, x1, y1), colour)
        _label(
            draw,
            font,
            (x0 + 2, y1 - 13),
            f"{roi.aspect} {'safe' if roi.safe else 'unsafe'}",
            colour,
        )


def _label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    xy: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
) -> None:
    x, y = xy
    left, top, right, bottom = draw.textbbox((x + 2, y + 1), text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
    draw.text((x + 2, y + 1), text, fill=colour, font=font)


def _dashed_rect(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    colour: tuple[int, int, int],
    dash: float = 7,
    gap: float = 5,
) -> None:
    x0, y0, x1, y1 = box
    for ax, ay, bx, by in ((x0, y0, x1, y0), (x1, y0, x1, y1), (x0, y1, x1, y1), (x0, y0, x0, y1)):
        length = abs(bx - ax) + abs(by - ay)
        t = 0.0
        while t < length:
            t1 = min(t + dash, length)
            f0, f1 = (t / length, t1 / length) if length else (0.0, 0.0)
            draw.line(
                (
                    ax + (bx - ax) * f0,
                    ay + (by - ay) * f0,
                    ax + (bx - ax) * f1,
                    ay + (by - ay) * f1,
                ),
                fill=colour,
                width=2,
            )
            t = t1 + gap


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


def _crops_html(base: PILImage.Image, rois: Sequence[CropRoi], options: ReportOptions) -> str:
    """The best safe crop of each aspect as a small image; a line for aspects with none."""
    crops = _best_crops(rois)
    if not crops:
        return ""
    figures, missing = [], []
    for aspect, safe, best in crops:
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
        figures.append(
            f'<figure><img src="{_data_uri(crop, options.jpeg_quality)}" alt="{_e(aspect)} crop" '
            f'width="{crop.width}" height="{crop.height}"><figcaption>{_e(caption)}</figcaption></figure>'
        )
    out = f'<div class="crops">{"".join(figures)}</div>' if figures else ""
    if missing:
        out += f'<div class="nocrop">no safe crop: {_e("; ".join(missing))}</div>'
    return out


def _unsafe_why(best: CropRoi | None) -> str:
    if best is None:
        return "none stored"
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


def _faces_html(regions: Sequence[BlurRegion]) -> str:
    faces = [r for r in regions if r.kind == "face"]
    if not faces:
        return "no faces found"
    parts = []
    for i, f in enumerate(faces, 1):
        cov = f"{f.coverage:.0%} blurred" if f.coverage is not None else "?"
        parts.append(f'<span class="{_e(_enum_text(f.verdict))}">{_e(f.label or f"face {i}")}: {_e(cov)}</span>')
    return ", ".join(parts)


def _enum_text(value: object) -> str:
    return str(getattr(value, "value", value))
