"""The screening flow, written once: `qc screen` calls it in-process, Celery tasks call it later.

source -> bytes -> decode and validate -> detector (batched) -> faces, foreground ->
regions and verdict -> crop-safe ROIs -> one transaction (screening + regions + ROIs,
keyed by content hash and model version) -> optional overlay PNG.

Every input ends as a recorded outcome: screened with a verdict, or failed with a reason.
A bad file never stops the batch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from qc_worker.config import Settings
from qc_worker.db.writes import get_or_create_model_version, record_image_failure, save_screening, upsert_image
from qc_worker.detector.faces import detect_faces, salient_foreground
from qc_worker.detector.inference import Detector
from qc_worker.detector.regions import analyse_regions
from qc_worker.detector.roi import crop_safe_rois
from qc_worker.images import ImageError, decode_image
from qc_worker.overlay import render_overlay, write_png
from qc_worker.storage import LocalStore, StorageError

log = logging.getLogger(__name__)


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

    def best_crop(self, aspect: str = "16:9") -> dict | None:
        return next((r for r in self.rois if r["aspect"] == aspect), None)

    def to_dict(self) -> dict:
        return {
            "uri": self.uri, "status": self.status, "verdict": self.verdict, "score": self.score,
            "reason": self.reason, "sha256": self.sha256, "size": list(self.size) if self.size else None,
            "worst_region": self.worst_region, "regions": self.regions, "rois": self.rois, "overlay": self.overlay,
            "timings": self.timings,
        }


@dataclass
class _Decoded:
    uri: str
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
        store: LocalStore | None = None,
        overlay_dir: Path | None = None,
        source_kind: str = "local",
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.sessions = sessions
        self.store = store or LocalStore()
        self.overlay_dir = overlay_dir
        self.source_kind = source_kind
        meta = detector.meta
        self.threshold = float(meta.thresholds.get("pixel", 0.5))
        with self.sessions.begin() as s:
            mv = get_or_create_model_version(
                s, name=f"{meta.model.encoder}-unet-{meta.checksum[:12]}", checksum=meta.checksum,
                metrics=meta.metrics, thresholds=meta.thresholds,
            )
            self.model_version_id = mv.id

    def screen(self, uris: Iterable[str], progress: Callable[[Outcome], None] | None = None) -> Iterator[Outcome]:
        """Outcomes in input order, a batch at a time (``Settings.batch_size`` per forward pass)."""
        batch: list[str] = []
        for uri in uris:
            batch.append(uri)
            if len(batch) == self.settings.batch_size:
                yield from self._screen_batch(batch, progress)
                batch = []
        if batch:
            yield from self._screen_batch(batch, progress)

    def _screen_batch(self, uris: list[str], progress: Callable[[Outcome], None] | None) -> Iterator[Outcome]:
        decoded: list[_Decoded] = []
        outcomes: dict[str, Outcome] = {}
        for uri in uris:
            item = self._decode(uri)
            if isinstance(item, Outcome):
                outcomes[uri] = item
            else:
                decoded.append(item)
        t0 = time.perf_counter()
        preds = self.detector.predict([d.rgb for d in decoded]) if decoded else []
        detect_s = (time.perf_counter() - t0) / max(len(decoded), 1)
        for d, pred in zip(decoded, preds, strict=True):
            outcomes[d.uri] = self._finish(d, pred.probability, pred.intensity, {"decode": d.seconds, "detect": detect_s})
        for uri in uris:
            if progress:
                progress(outcomes[uri])
            yield outcomes[uri]

    def _decode(self, uri: str) -> _Decoded | Outcome:
        t0 = time.perf_counter()
        sha = None
        try:
            data = self.store.read(uri)
            sha = hashlib.sha256(data).hexdigest()
            rgb = decode_image(data, self.settings.max_image_pixels)
        except (StorageError, ImageError) as exc:
            return self._fail(uri, str(exc), sha)
        return _Decoded(uri, sha, rgb, time.perf_counter() - t0)

    def _fail(self, uri: str, reason: str, sha: str | None) -> Outcome:
        log.warning("failed %s: %s", uri, reason)
        with self.sessions.begin() as s:
            record_image_failure(s, uri, reason, sha, source_kind=self.source_kind)
        return Outcome(uri, "failed", reason=reason, sha256=sha)

    def _finish(self, d: _Decoded, prob: np.ndarray, inten: np.ndarray, timings: dict[str, float]) -> Outcome:
        s = self.settings
        t0 = time.perf_counter()
        faces = detect_faces(d.rgb, s.faces)
        fg = salient_foreground(d.rgb, faces)
        report = analyse_regions(prob, inten, self.threshold, faces=faces, foreground=fg, config=s.regions)
        rois = crop_safe_rois(prob, self.threshold, faces=faces, foreground=fg, config=s.roi)
        timings["analyse"] = time.perf_counter() - t0
        regions = [r.to_dict() for r in report.regions]
        roi_dicts = [r.to_dict() for r in rois]
        overlay = None
        if self.overlay_dir is not None:
            t1 = time.perf_counter()
            path = self.overlay_dir / f"{Path(d.uri).stem}-{d.sha256[:10]}.png"
            write_png(path, render_overlay(d.rgb, prob, regions, roi_dicts))
            overlay = str(path)
            timings["overlay"] = time.perf_counter() - t1
        h, w = d.rgb.shape[:2]
        scores = {"score": report.score, "blurred_fraction": report.blurred_fraction,
                  "max_probability": float(prob.max()), "threshold": self.threshold, "reasons": list(report.reasons)}
        t2 = time.perf_counter()
        with self.sessions.begin() as session:
            image = upsert_image(session, d.uri, d.sha256, w, h, self.source_kind)
            save_screening(session, image.id, self.model_version_id, report.verdict, scores, timings,
                           regions=regions, rois=roi_dicts, overlay_uri=overlay)
        timings["store"] = time.perf_counter() - t2
        worst = report.worst_region.to_dict() if report.worst_region else None
        return Outcome(d.uri, "screened", report.verdict, float(report.score), None, d.sha256, (w, h),
                       worst, roi_dicts, regions, overlay, timings)
