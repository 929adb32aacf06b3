"""The screening flow, written once: `qc screen` calls it in-process, Celery tasks call it later.

source -> bytes -> decode and validate -> detector (batched) -> faces, foreground ->
regions and verdict -> crop-safe ROIs -> one transaction (screening + regions + ROIs,
keyed by content hash and model version) -> optional overlay image (JPEG).

Every input ends as a recorded outcome: screened with a verdict, or failed with a reason.
A bad file never stops the batch. A store that is down (:class:`TransientStorageError`) is
not the file's fault: it propagates, so the job queue retries the task instead of
recording good images as failed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from qc_worker.config import Settings
from qc_worker.db.writes import (
    get_or_create_model_version,
    record_image_failure,
    save_screening,
    upsert_image,
)
from qc_worker.detector.faces import Face, Foreground, detect_faces, load_face_detector, salient_foreground
from qc_worker.detector.observable import observable_map
from qc_worker.detector.regions import RegionReport, analyse_regions
from qc_worker.detector.roi import Roi, crop_safe_rois
from qc_worker.images import ImageError, decode_image
from qc_worker.overlay import encode_overlay, render_overlay
from qc_worker.storage import LocalStore, StorageError, Store, TransientStorageError
from qc_worker.vocabulary import FailureKind, OutcomeStatus, SourceKind

if TYPE_CHECKING:  # the detector pulls in torch; enqueueing and bookkeeping need none of it
    from qc_worker.detector.inference import Detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One image to screen and what the database should know about where it came from."""

    uri: str
    source_kind: str | None = SourceKind.LOCAL  # None keeps what the image row already says
    title_id: int | None = None
    video_id: int | None = None
    job_id: int | None = None
    timestamp_s: float | None = None
    frame_index: int | None = None
    vendor: str | None = None

    def image_fields(self) -> dict:
        return {
            "source_kind": self.source_kind,
            "title_id": self.title_id,
            "video_id": self.video_id,
            "job_id": self.job_id,
            "timestamp_s": self.timestamp_s,
            "frame_index": self.frame_index,
            "vendor": self.vendor,
        }


@dataclass
class Outcome:
    """What happened to one input: a verdict, or a failure with its reason."""

    uri: str
    status: str
    verdict: str | None = None
    score: float | None = None
    reason: str | None = None
    sha256: str | None = None
    size: tuple[int, int] | None = None
    worst_region: dict | None = None
    rois: list[dict] = field(default_factory=list)
    regions: list[dict] = field(default_factory=list)
    overlay: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    image_id: int | None = None
    #: Why it failed, in the metrics' words (set from the error that failed it).
    failure_kind: FailureKind | None = None
    #: The rules that sent a screened image to review or reject (empty when it passes).
    reasons: tuple[str, ...] = ()

    @property
    def why(self) -> str | None:
        """One line for people: the failure's reason, else the rules that fired."""
        return self.reason or ("; ".join(self.reasons) or None)

    def best_crop(self, aspect: str = "16:9") -> dict | None:
        return next((r for r in self.rois if r["aspect"] == aspect), None)

    def to_dict(self) -> dict:
        return {
            "uri": self.uri,
            "status": self.status,
            "verdict": self.verdict,
            "score": self.score,
            "reason": self.why,
            "reasons": list(self.reasons),
            "sha256": self.sha256,
            "size": list(self.size) if self.size else None,
            "worst_region": self.worst_region,
            "regions": self.regions,
            "rois": self.rois,
            "overlay": self.overlay,
            "timings": self.timings,
            "image_id": self.image_id,
            "failure_kind": self.failure_kind,
        }


@dataclass(frozen=True)
class Analysis:
    """Everything screening reads off one image's maps, before anything is stored."""

    report: RegionReport
    rois: list[Roi]
    observable: np.ndarray


def load_detector(settings: Settings, path: Path | None = None) -> Detector:
    """The detector as Settings ask for it: checkpoint (``path``, else ``QC_MODEL_PATH``, else
    the shipped one), device, precision and images per forward pass (``QC_BATCH_SIZE``).

    The face detector the analysis needs loads here too, so a missing face model or package
    fails before the first image (:class:`FaceDetectorError`, naming what to install)."""
    from qc_worker.detector.inference import Detector, InferenceConfig

    load_face_detector(settings.faces)
    return Detector.load(
        path or settings.model_path,
        device=settings.device,
        precision=settings.precision,
        config=InferenceConfig(batch_size=settings.batch_size),
    )


def find_subjects(rgb: np.ndarray, settings: Settings) -> tuple[list[Face], Foreground | None]:
    """Faces and the salient foreground: what the verdict weighs most."""
    faces = detect_faces(rgb, settings.faces)
    return faces, salient_foreground(rgb, faces)


def analyse_image(
    rgb: np.ndarray,
    prob: np.ndarray,
    inten: np.ndarray,
    threshold: float,
    settings: Settings,
    subjects: tuple[list[Face], Foreground | None] | None = None,
    observable: np.ndarray | None = None,
    frame_threshold: float | None = None,
) -> Analysis:
    """Regions, verdict and crop-safe ROIs of one image from its detector maps.

    Shares of blur are taken over textured pixels only, so a plain sky is never a reason to
    review or reject. Calibration (``qc-train calibrate``) calls this with many thresholds
    on the same maps; ``subjects`` and ``observable`` (the image's own, computed by the
    caller) let it find the faces and the textured pixels once. ``frame_threshold`` is the
    model version's whole-frame rule (:mod:`qc_worker.detector.regions`; None: off).
    """
    faces, fg = subjects if subjects is not None else find_subjects(rgb, settings)
    if observable is None:
        observable = observable_map(rgb, settings.observable)
    min_obs = settings.observable.min_observable_fraction
    report = analyse_regions(
        prob,
        inten,
        threshold,
        faces=faces,
        foreground=fg,
        config=settings.regions,
        observable=observable,
        min_observable_fraction=min_obs,
        frame_threshold=frame_threshold,
    )
    rois = crop_safe_rois(
        prob,
        threshold,
        faces=faces,
        foreground=fg,
        config=settings.roi,
        observable=observable,
        min_observable_fraction=min_obs,
    )
    return Analysis(report, rois, observable)


@dataclass
class _Decoded:
    source: Source
    sha256: str
    rgb: np.ndarray
    seconds: float


class Screener:
    """Screens batches of sources against one loaded detector and one database."""

    def __init__(
        self,
        settings: Settings,
        detector: Detector,
        sessions: sessionmaker[Session],
        *,
        store: Store | None = None,
        overlay_store: Store | None = None,
        overlay_prefix: str = "",
        source_kind: str = SourceKind.LOCAL,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.sessions = sessions
        self.store = store or LocalStore()
        self.overlay_store = overlay_store
        self.overlay_prefix = overlay_prefix
        self.source_kind = source_kind
        meta = detector.meta
        self.threshold = float(meta.thresholds.get("pixel", 0.5))
        frame = meta.thresholds.get("frame")
        self.frame_threshold = None if frame is None else float(frame)
        with self.sessions.begin() as s:
            mv = get_or_create_model_version(
                s,
                name=f"{meta.model.encoder}-unet-{meta.checksum[:12]}",
                checksum=meta.checksum,
                metrics=meta.metrics,
                thresholds=meta.thresholds,
            )
            self.model_version_id = mv.id
            self.model_checksum = meta.checksum

    def screen(
        self, sources: Iterable[str | Source], progress: Callable[[Outcome], None] | None = None
    ) -> Iterator[Outcome]:
        """Outcomes in input order, a batch at a time (``Settings.batch_size`` per forward pass).

        Plain strings are sources of this screener's ``source_kind``.
        """
        batch: list[Source] = []
        for item in sources:
            batch.append(item if isinstance(item, Source) else Source(item, self.source_kind))
            if len(batch) == self.settings.batch_size:
                yield from self._screen_batch(batch, progress)
                batch = []
        if batch:
            yield from self._screen_batch(batch, progress)

    def _screen_batch(self, sources: list[Source], progress: Callable[[Outcome], None] | None) -> Iterator[Outcome]:
        decoded: list[_Decoded] = []
        outcomes: dict[int, Outcome] = {}
        at: dict[int, int] = {}
        for i, src in enumerate(sources):
            item = self._decode(src)
            if isinstance(item, Outcome):
                outcomes[i] = item
            else:
                at[len(decoded)] = i
                decoded.append(item)
        t0 = time.perf_counter()
        preds = self.detector.predict([d.rgb for d in decoded]) if decoded else []
        detect_s = (time.perf_counter() - t0) / max(len(decoded), 1)
        for j, (d, pred) in enumerate(zip(decoded, preds, strict=True)):
            outcomes[at[j]] = self._finish(
                d, pred.probability, pred.intensity, {"decode": d.seconds, "detect": detect_s}
            )
        for i in range(len(sources)):
            if progress:
                progress(outcomes[i])
            yield outcomes[i]

    def _decode(self, src: Source) -> _Decoded | Outcome:
        t0 = time.perf_counter()
        sha = None
        try:
            data = self.store.read(src.uri, self.settings.max_image_bytes)
            sha = hashlib.sha256(data).hexdigest()
            rgb = decode_image(data, self.settings.max_image_pixels)
        except TransientStorageError:
            raise
        except (StorageError, ImageError) as exc:
            return self._fail(src, str(exc), sha, exc.kind)
        return _Decoded(src, sha, rgb, time.perf_counter() - t0)

    def _fail(self, src: Source, reason: str, sha: str | None, kind: FailureKind) -> Outcome:
        log.warning("failed %s: %s", src.uri, reason)
        with self.sessions.begin() as s:
            image = record_image_failure(s, src.uri, reason, sha, **src.image_fields())
            image_id = image.id
        return Outcome(src.uri, OutcomeStatus.FAILED, reason=reason, sha256=sha, image_id=image_id, failure_kind=kind)

    def _finish(self, d: _Decoded, prob: np.ndarray, inten: np.ndarray, timings: dict[str, float]) -> Outcome:
        s = self.settings
        t0 = time.perf_counter()
        analysis = analyse_image(d.rgb, prob, inten, self.threshold, s, frame_threshold=self.frame_threshold)
        report, rois, observable = analysis.report, analysis.rois, analysis.observable
        timings["analyse"] = time.perf_counter() - t0
        regions = [r.to_dict() for r in report.regions]
        roi_dicts = [r.to_dict() for r in rois]
        overlay = None
        if self.overlay_store is not None:
            t1 = time.perf_counter()
            name = f"{self.overlay_prefix}{PurePosixPath(d.source.uri).stem}-{d.sha256[:10]}.overlay.jpg"
            data = encode_overlay(render_overlay(d.rgb, np.where(observable, prob, 0.0), regions, roi_dicts))
            overlay = self.overlay_store.write(name, data, "image/jpeg")
            timings["overlay"] = time.perf_counter() - t1
        h, w = d.rgb.shape[:2]
        scores = {
            "score": report.score,
            "blurred_fraction": report.blurred_fraction,
            "frame_median": report.frame_median,
            "max_probability": float(prob[observable].max(initial=0.0)),
            "threshold": self.threshold,
            "reasons": list(report.reasons),
        }
        t2 = time.perf_counter()
        with self.sessions.begin() as session:
            image = upsert_image(session, d.source.uri, d.sha256, w, h, **d.source.image_fields())
            image_id = image.id
            save_screening(
                session,
                image_id,
                self.model_version_id,
                report.verdict,
                scores,
                timings,
                regions=regions,
                rois=roi_dicts,
                job_id=d.source.job_id,
                overlay_uri=overlay,
            )
        timings["store"] = time.perf_counter() - t2
        worst = report.worst_region.to_dict() if report.worst_region else None
        return Outcome(
            d.source.uri,
            OutcomeStatus.SCREENED,
            verdict=report.verdict,
            score=float(report.score),
            sha256=d.sha256,
            size=(w, h),
            worst_region=worst,
            rois=roi_dicts,
            regions=regions,
            overlay=overlay,
            timings=timings,
            image_id=image_id,
            reasons=tuple(report.reasons),
        )
