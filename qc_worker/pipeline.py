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

import contextvars
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from qc_worker.detector.scales import coarse_frame_medians
from qc_worker.images import ImageError, decode_image
from qc_worker.overlay import encode_overlay, render_overlay
from qc_worker.storage import LocalStore, StorageError, Store, TransientStorageError
from qc_worker.values import ImageOrigin, Outcome, Source
from qc_worker.vocabulary import FailureKind, OutcomeStatus, SourceKind

if TYPE_CHECKING:  # the detector pulls in torch; enqueueing and bookkeeping need none of it
    from qc_worker.detector.inference import Detector, Prediction

log = logging.getLogger(__name__)


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
    coarse_medians: Mapping[float, float] | None = None,
) -> Analysis:
    """Regions, verdict and crop-safe ROIs of one image from its detector maps.

    Shares of blur are taken over textured pixels only, so a plain sky is never a reason to
    review or reject. Calibration (``qc-train calibrate``) calls this with many thresholds
    on the same maps; ``subjects`` and ``observable`` (the image's own, computed by the
    caller) let it find the faces and the textured pixels once. ``frame_threshold`` is the
    model version's whole-frame rule (:mod:`qc_worker.detector.regions`; None: off), which
    also weighs the ``coarse_medians`` of smaller copies (:func:`coarse_frame_medians` of
    :attr:`Prediction.coarse`, computed once by the caller, as calibration's many
    thresholds need them once).
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
        coarse_medians=coarse_medians,
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


def _forward_threads() -> int:
    """The threads torch gives the forward pass: the process's share of the cores, which
    deployments set per worker process (``OMP_NUM_THREADS``; every core when unset)."""
    import torch

    return torch.get_num_threads()


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
        self.analysis_threads = settings.analysis_threads or _forward_threads()
        meta = detector.meta
        self.threshold = detector.pixel_threshold
        self.frame_threshold = detector.frame_threshold
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
            batch.append(item if isinstance(item, Source) else Source(item, ImageOrigin(self.source_kind)))
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
        t1 = time.perf_counter()
        analyses = self._analyse(decoded, preds)
        detect_s = (t1 - t0) / max(len(decoded), 1)
        analyse_s = (time.perf_counter() - t1) / max(len(decoded), 1)
        for j, (d, pred, analysis) in enumerate(zip(decoded, preds, analyses, strict=True)):
            timings = {"decode": d.seconds, "detect": detect_s, "analyse": analyse_s}
            outcomes[at[j]] = self._finish(d, pred.probability, analysis, timings)
        for i in range(len(sources)):
            if progress:
                progress(outcomes[i])
            yield outcomes[i]

    def _analyse(self, decoded: list[_Decoded], preds: list[Prediction]) -> list[Analysis]:
        """The batch's analyses, ``Settings.analysis_threads`` images at a time.

        The forward pass keeps every core busy; one image's analysis mostly one. NumPy,
        OpenCV and torch (the face nets) let go of the GIL while they work, so threads put
        the other cores to use. Each image's analysis reads only its own arrays, so the
        results are the same as one at a time (tested)."""
        threads = min(self.analysis_threads, len(decoded))

        def analyse(d: _Decoded, pred: Prediction) -> Analysis:
            return analyse_image(
                d.rgb,
                pred.probability,
                pred.intensity,
                self.threshold,
                self.settings,
                frame_threshold=self.frame_threshold,
                coarse_medians=coarse_frame_medians(d.rgb, pred.coarse, self.settings.observable),
            )

        if threads <= 1:
            return [analyse(d, p) for d, p in zip(decoded, preds, strict=True)]
        with ThreadPoolExecutor(threads, thread_name_prefix="qc-analyse") as pool:
            # Each task in a copy of this context, so log lines keep the job's ids.
            futures = [
                pool.submit(contextvars.copy_context().run, analyse, d, p) for d, p in zip(decoded, preds, strict=True)
            ]
            return [f.result() for f in futures]

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
            image = record_image_failure(s, src.uri, reason, sha, origin=src.origin)
            image_id = image.id
        return Outcome(src.uri, OutcomeStatus.FAILED, reason=reason, sha256=sha, image_id=image_id, failure_kind=kind)

    def _finish(self, d: _Decoded, prob: np.ndarray, analysis: Analysis, timings: dict[str, float]) -> Outcome:
        report, rois, observable = analysis.report, analysis.rois, analysis.observable
        overlay = None
        if self.overlay_store is not None:
            t1 = time.perf_counter()
            name = f"{self.overlay_prefix}{PurePosixPath(d.source.uri).stem}-{d.sha256[:10]}.overlay.jpg"
            data = encode_overlay(render_overlay(d.rgb, np.where(observable, prob, 0.0), report.regions, rois))
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
            image = upsert_image(session, d.source.uri, d.sha256, w, h, d.source.origin)
            image_id = image.id
            save_screening(
                session,
                image_id,
                self.model_version_id,
                report.verdict,
                scores,
                timings,
                regions=report.regions,
                rois=rois,
                job_id=d.source.origin.job_id,
                overlay_uri=overlay,
            )
        timings["store"] = time.perf_counter() - t2
        return Outcome(
            d.source.uri,
            OutcomeStatus.SCREENED,
            verdict=report.verdict,
            score=float(report.score),
            sha256=d.sha256,
            size=(w, h),
            worst_region=report.worst_region,
            rois=rois,
            regions=list(report.regions),
            overlay=overlay,
            timings=timings,
            image_id=image_id,
            reasons=tuple(report.reasons),
        )
