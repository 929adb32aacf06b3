"""The values that travel between the layers: where an image came from, what to screen, what
happened to it.

:class:`ImageOrigin` is what the database records about an image's origin; :class:`Source`
is one image to screen with its origin; :class:`Outcome` is what screening made of it, with
the detector's own :class:`~qc_worker.detector.regions.Region` and
:class:`~qc_worker.detector.roi.Roi` objects (turned into plain JSON only at the edge, by
:meth:`Outcome.to_dict`). They live here rather than in the pipeline so that the layers the
pipeline serves or uses (job bookkeeping, the database's writes, metrics) can name them
without importing the screening flow, its detector and its image decoding.

At run time this module imports only :mod:`qc_worker.vocabulary` and
:mod:`qc_worker.summary` (the JSON form of a crop), which import nothing else of the
project, so any layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qc_worker.summary import crop_json
from qc_worker.vocabulary import FailureKind, OutcomeStatus, SourceKind, Verdict

if TYPE_CHECKING:  # types only: the detector's modules pull in OpenCV
    from qc_worker.detector.regions import Region
    from qc_worker.detector.roi import Roi

__all__ = ["ImageOrigin", "Outcome", "Source"]


@dataclass(frozen=True)
class ImageOrigin:
    """Where an image came from, as its ``images`` row records it.

    The field names are the row's column names. ``None`` means "not known here": writing an
    image keeps what its row already says for each such field.
    """

    source_kind: SourceKind | str | None = None
    title_id: int | None = None
    video_id: int | None = None
    job_id: int | None = None
    timestamp_s: float | None = None
    frame_index: int | None = None
    vendor: str | None = None


@dataclass(frozen=True)
class Source:
    """One image to screen and where it came from."""

    uri: str
    origin: ImageOrigin = ImageOrigin(SourceKind.LOCAL)


@dataclass
class Outcome:
    """What happened to one input: a verdict, or a failure with its reason."""

    uri: str
    status: OutcomeStatus | str
    verdict: Verdict | str | None = None
    score: float | None = None
    reason: str | None = None
    sha256: str | None = None
    size: tuple[int, int] | None = None
    worst_region: Region | None = None
    rois: list[Roi] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
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

    def best_crop(self, aspect: str = "16:9") -> Roi | None:
        return next((r for r in self.rois if r.aspect == aspect), None)

    def to_dict(self) -> dict:
        """The outcome as plain JSON types (``qc screen --format json``)."""
        return {
            "uri": self.uri,
            "status": self.status,
            "verdict": self.verdict,
            "score": self.score,
            "reason": self.why,
            "reasons": list(self.reasons),
            "sha256": self.sha256,
            "size": list(self.size) if self.size else None,
            "worst_region": self.worst_region.to_dict() if self.worst_region else None,
            "regions": [r.to_dict() for r in self.regions],
            "rois": [crop_json(r) for r in self.rois],
            "overlay": self.overlay,
            "timings": self.timings,
            "image_id": self.image_id,
            "failure_kind": self.failure_kind,
        }
