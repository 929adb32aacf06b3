"""`qc-train calibrate`: judge a detector by the verdicts `qc screen` gives on real images,
and choose the pixel threshold that lets sharp photos pass while real blur does not.

Synthetic validation alone chose the first model's pixel threshold (max blur IoU) and
sent most sharp photos to review. Here the threshold is chosen on what users see: the
screening verdict (:func:`qc_worker.pipeline.analyse_image`, the same code `qc screen`
runs) of real motion blur (``realdev``: Levin et al. camera shake with its sharp
originals, frame averages of real video, replayed hand shake) and of sharp, unblurred
photos the model never trained on (the run's *validation* sources). The run's held-out
*test* sources are reported at the frozen threshold and never used to choose it.

A blurred image is right when its verdict is not ``pass``; a sharp one when it is. The pixel
threshold and the whole-frame threshold (the median probability over observable pixels that
sends an image to review, :mod:`qc_worker.detector.regions`; or no frame rule at all) are
chosen together: the pair that maximises the mean of the per-group shares of right verdicts
(each group weighs the same whatever its size), ties going to the higher thresholds (fewer
false alarms). The frame rule only turns a ``pass`` into a ``review``, so the sweep applies
it to each pixel threshold's verdicts; the reported verdicts are then screened again with
both thresholds, as ``qc screen`` would. Image-level ROC AUC uses the model's image score (a
high quantile of the probability over observable pixels), and is also reported for the
median over observable pixels: a high quantile finds one small blurred face but also the few
hot pixels of a sharp photo, while blur over the whole frame (Levin's camera shake, video
frames) moves the median. The two classical baselines get their AUCs on the same images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_training.evaluate import hf_blur_map, laplacian_variance
from model_training.metrics import image_score, roc_auc
from qc_worker.config import Settings
from qc_worker.detector.boxes import Box
from qc_worker.detector.faces import Foreground
from qc_worker.detector.inference import Detector
from qc_worker.detector.observable import observable_map
from qc_worker.detector.regions import frame_median, highest_frame_median
from qc_worker.detector.scales import coarse_frame_medians
from qc_worker.images import ImageError, decode_image
from qc_worker.pipeline import analyse_image, find_subjects

log = logging.getLogger(__name__)

#: Candidate pixel thresholds, coarse where verdicts change slowly.
GRID = tuple(round(t, 3) for t in np.concatenate([np.arange(0.2, 0.9, 0.025), np.arange(0.9, 0.99, 0.01)]))
#: Candidate whole-frame thresholds; None leaves the rule off.
FRAME_GRID: tuple[float | None, ...] = (
    0.03,
    0.04,
    0.05,
    0.06,
    0.08,
    0.1,
    0.12,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    None,
)
#: Groups used to choose the threshold; the rest are only reported.
CALIBRATION_GROUPS = ("levin_blur", "levin_sharp", "blur_only", "photos_val")


@dataclass(frozen=True)
class RealItem:
    path: Path
    group: str
    blurred: bool


@dataclass
class Scored:
    """One image's detector maps and everything the verdict needs, computed once."""

    item: RealItem
    rgb: np.ndarray
    prob: np.ndarray
    inten: np.ndarray
    subjects: tuple[list[Box], Foreground | None]
    observable: np.ndarray
    score: float
    #: The frame median the frame rule judges: the highest over the frame scales.
    median: float
    laplacian: float
    hf: float
    #: Frame medians of the smaller copies the frame rule reads, by scale (once per image:
    #: every threshold's verdicts reuse them).
    coarse_medians: dict[float, float]


def realdev_items(root: Path) -> list[RealItem]:
    """Levin blurred / sharp and the blurred-only folders of a ``realdev`` tree (kernels left out)."""
    root = Path(root)
    if not (root / "levin").is_dir():
        raise FileNotFoundError(f"{root}: not a realdev folder (no levin/)")
    items = [RealItem(p, "levin_blur", True) for p in sorted((root / "levin" / "blur").iterdir())]
    items += [RealItem(p, "levin_sharp", False) for p in sorted((root / "levin" / "sharp").iterdir())]
    for kind in sorted(p for p in (root / "blur_only").iterdir() if p.is_dir()):
        items += [RealItem(p, "blur_only", True) for p in sorted(kind.iterdir())]
    return items


def photo_items(splits_file: Path) -> list[RealItem]:
    """The run's validation and held-out test sources, unblurred, as sharp items."""
    splits = json.loads(Path(splits_file).read_text())
    return [RealItem(Path(p), f"photos_{k}", False) for k in ("val", "test") for p in splits[k]]


def score_items(
    detector: Detector,
    items: Sequence[RealItem],
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> list[Scored]:
    """Run the detector (as screening runs it) and both baselines on every readable item."""
    out = []
    for item in items:
        try:
            rgb = decode_image(item.path, settings.max_image_pixels)
        except ImageError as exc:
            log.warning("skipping %s: %s", item.path, exc)
            continue
        pred = detector.predict([rgb])[0]
        valid = observable_map(rgb, settings.observable)
        coarse = coarse_frame_medians(rgb, pred.coarse, settings.observable)
        full = frame_median(pred.probability, valid, settings.observable.min_observable_fraction)
        median, _ = highest_frame_median(full, coarse)
        out.append(
            Scored(
                item,
                rgb,
                pred.probability,
                pred.intensity,
                find_subjects(rgb, settings),
                valid,
                image_score(pred.probability, valid=valid),
                median,
                -laplacian_variance(rgb),
                image_score(hf_blur_map(rgb)),
                coarse,
            )
        )
        if progress:
            progress(1)
    return out


def verdicts(
    scored: Sequence[Scored],
    threshold: float,
    settings: Settings,
    frame_threshold: float | None = None,
) -> list[str]:
    """Each image's screening verdict at these thresholds, by the code `qc screen` runs."""
    return [
        analyse_image(
            s.rgb, s.prob, s.inten, threshold, settings, s.subjects, s.observable, frame_threshold, s.coarse_medians
        ).report.verdict
        for s in scored
    ]


def with_frame_rule(scored: Sequence[Scored], verdict_list: Sequence[str], frame_threshold: float | None) -> list[str]:
    """Verdicts once the whole-frame rule is added: a ``pass`` whose median reaches it reviews."""
    if frame_threshold is None:
        return list(verdict_list)
    return [
        "review" if v == "pass" and s.median >= frame_threshold else v
        for s, v in zip(scored, verdict_list, strict=True)
    ]


def group_table(scored: Sequence[Scored], verdict_list: Sequence[str]) -> dict[str, dict]:
    """Per group: images, right verdicts (blurred: not pass; sharp: pass), verdict counts."""
    table: dict[str, dict] = {}
    for s, v in zip(scored, verdict_list, strict=True):
        g = table.setdefault(s.item.group, {"n": 0, "right": 0, "pass": 0, "review": 0, "reject": 0})
        g["n"] += 1
        g[v] += 1
        g["right"] += int((v != "pass") if s.item.blurred else (v == "pass"))
    return table


def objective(table: dict[str, dict], groups: Sequence[str] = CALIBRATION_GROUPS) -> float:
    shares = [table[g]["right"] / table[g]["n"] for g in groups if g in table and table[g]["n"]]
    return float(np.mean(shares)) if shares else 0.0


def aucs(scored: Sequence[Scored], groups: tuple[str, str]) -> dict[str, float]:
    """ROC AUC of blurred ``groups[0]`` against sharp ``groups[1]`` for ours and the baselines."""
    pick = [s for s in scored if s.item.group in groups]
    labels = np.array([s.item.blurred for s in pick])
    if labels.all() or not labels.any():
        return {}
    return {
        name: roc_auc(np.array([getattr(s, attr) for s in pick]), labels)
        for name, attr in (
            ("ours", "score"),
            ("ours_median", "median"),
            ("laplacian_variance", "laplacian"),
            ("hf_energy", "hf"),
        )
    }


def window_around(centre: float, half_width: float) -> tuple[float, float]:
    """The pixel window ``centre`` +- ``half_width`` within [0, 1], rounded so that grid
    points on its edges stay in: 0.55 - 0.1 is 0.45000000000000007 in floats."""
    return round(max(0.0, centre - half_width), 6), round(min(1.0, centre + half_width), 6)


def pixel_candidates(pixel_range: tuple[float, float] | None, grid: Sequence[float] = GRID) -> list[float]:
    """The pixel thresholds calibration may choose among; a window with none of them is an
    error, since the sweep would have nothing to pick."""
    if pixel_range is None:
        return list(grid)
    low, high = pixel_range
    inside = [t for t in grid if low <= t <= high]
    if not inside:
        raise ValueError(f"no candidate pixel threshold lies in {low}..{high}")
    return inside


def calibrate(
    scored: Sequence[Scored],
    settings: Settings,
    *,
    frozen: float | None = None,
    frozen_frame: float | None = None,
    grid: Sequence[float] = GRID,
    frame_grid: Sequence[float | None] = FRAME_GRID,
    pixel_range: tuple[float, float] | None = None,
) -> dict:
    """Choose the pixel and frame thresholds on the calibration groups (or keep ``frozen``
    and ``frozen_frame``) and report every group at them, with the sweep and the AUCs.

    ``pixel_range`` (low, high) keeps the pixel threshold where the blur map still localises:
    the verdicts alone can prefer a threshold so high (0.98) that the frame rule does all the
    work and crops and regions lose the blur they should show. Give a window around the
    threshold ``qc-train evaluate`` found best for blur IoU on synthetic validation.
    """
    grid = pixel_candidates(pixel_range, grid)
    sweep = []
    for t in [frozen] if frozen is not None else grid:
        pixel_only = verdicts(scored, t, settings)
        for f in [frozen_frame] if frozen is not None else frame_grid:
            table = group_table(scored, with_frame_rule(scored, pixel_only, f))
            sweep.append({"threshold": t, "frame_threshold": f, "objective": objective(table)})
    # Ties: the higher pixel threshold, then the higher frame threshold, then no frame rule.
    best = max(sweep, key=lambda r: (r["objective"], r["threshold"], r["frame_threshold"] or 2.0))
    per_image = verdicts(scored, best["threshold"], settings, best["frame_threshold"])
    return {
        "threshold": best["threshold"],
        "frame_threshold": best["frame_threshold"],
        "chosen_by": "frozen (given)"
        if frozen is not None
        else f"max mean right share over {', '.join(CALIBRATION_GROUPS)}"
        + (f", pixel threshold in {pixel_range[0]:g}..{pixel_range[1]:g}" if pixel_range else ""),
        "objective": round(objective(group_table(scored, per_image)), 4),
        "groups": group_table(scored, per_image),
        "auc": {
            "levin": aucs(scored, ("levin_blur", "levin_sharp")),
            "blur_only_vs_photos_test": aucs(scored, ("blur_only", "photos_test")),
        },
        "sweep": [{**r, "objective": round(r["objective"], 4)} for r in sweep],
        "images": [
            {
                "path": str(s.item.path),
                "group": s.item.group,
                "blurred": s.item.blurred,
                "verdict": v,
                "score": round(s.score, 4),
                "median": round(s.median, 4),
            }
            for s, v in zip(scored, per_image, strict=True)
        ],
    }


def _frame_scales_text(result: dict) -> str:
    scales = [s for s in result.get("frame_scales", [1.0]) if s != 1.0]
    return f", the frame read at 1x and {', '.join(f'{s:g}x' for s in scales)} size" if scales else ""


def markdown(result: dict) -> str:
    """The per-group verdict table and the AUCs, as Markdown."""
    frame = result.get("frame_threshold")
    frame_text = "no whole-frame rule" if frame is None else f"whole-frame median threshold {frame:.3f}"
    lines = [
        f"Pixel threshold {result['threshold']:.3f}, {frame_text}{_frame_scales_text(result)} ({result['chosen_by']}).",
        "",
        "| set | images | right verdicts | pass | review | reject |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "levin_blur": "realdev Levin, blurred (right = not pass)",
        "levin_sharp": "realdev Levin, sharp originals (right = pass)",
        "blur_only": "realdev blur_only (HIDE, Köhler, Fastec; right = not pass)",
        "photos_val": "unblurred validation photos (right = pass)",
        "photos_test": "unblurred held-out test photos (right = pass)",
    }
    for g, label in names.items():
        if g in result["groups"]:
            r = result["groups"][g]
            lines.append(f"| {label} | {r['n']} | {r['right']} | {r['pass']} | {r['review']} | {r['reject']} |")
    lev = result["auc"]["levin"]
    if lev:
        lines += [
            "",
            "| image ROC AUC | ours (q99) | ours (median) | Laplacian variance | HF-energy map |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("levin", "realdev Levin blurred vs sharp"),
            ("blur_only_vs_photos_test", "realdev blur_only vs held-out test photos"),
        ):
            a = result["auc"][key]
            if a:
                lines.append(
                    f"| {label} | {a['ours']:.3f} | {a['ours_median']:.3f} | "
                    f"{a['laplacian_variance']:.3f} | {a['hf_energy']:.3f} |"
                )
    return "\n".join(lines) + "\n"
