"""`qc-train evaluate`: pixel- and image-level metrics for the model and two classical baselines.

Every method gets its own threshold, chosen by grid search on a validation split (max
blur IoU for pixels, max F1 for images, paper 4.2) and then frozen for the test split.
Baselines: variance of the Laplacian (image level, the classic blur score) and a local
high-frequency energy map (pixel level, and image level by the same aggregation as ours).

Pixels count only where blur is observable: a synthetic set's own ``observable/`` maps
(read off the sharp source), else the screening rule applied to the image itself
(:mod:`qc_worker.detector.observable`), and image scores read observable pixels only.

Dataset layouts understood (found automatically):
  CUHK      image/NAME.jpg + gt/NAME.png            (white = blurred)
  synthetic images/NAME.png + masks/NAME.png        (what ``qc-train synth`` writes)
  flat      NAME.jpg + NAME_mask.png
  classes   sharp/* + blur/*                        (image level only)
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from model_training.data import IMAGE_SUFFIXES, SourceError, load_source
from model_training.metrics import (
    PixelHistogram,
    best_image_threshold,
    image_metrics,
    image_score,
    pixel_metrics,
    roc_curve,
)
from qc_worker.detector.model import BlurDetector
from qc_worker.detector.observable import observable_map

log = logging.getLogger(__name__)

OURS = "ours"
HF = "hf_energy"
VOL = "laplacian_variance"


@dataclass(frozen=True)
class Item:
    image: Path
    mask: Path | None
    blurred: bool

    def observable(self, rgb: np.ndarray) -> np.ndarray:
        """The item's own observable map when its dataset has one, else the screening rule's."""
        if self.mask is not None:
            own = self.mask.parent.parent / "observable" / self.mask.name
            if own.is_file():
                return _read_mask(own)
        return observable_map(rgb)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def discover(root: Path) -> tuple[str, list[Item]]:
    """The layout of ``root`` and its items (each image with its mask, if any, and label)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluation folder does not exist: {root}")
    for img_dir, mask_dir, name in (("image", "gt", "cuhk"), ("images", "masks", "synthetic")):
        if (root / img_dir).is_dir() and (root / mask_dir).is_dir():
            items = []
            for p in _images(root / img_dir):
                m = next(
                    (q for q in (root / mask_dir).glob(p.stem + ".*") if q.suffix.lower() in IMAGE_SUFFIXES),
                    None,
                )
                if m is None:
                    log.warning("no mask for %s: skipped", p)
                    continue
                items.append(Item(p, m, bool(_read_mask(m).any())))
            return name, items
    if (root / "sharp").is_dir() and (root / "blur").is_dir():
        items = [Item(p, None, False) for p in _images(root / "sharp")]
        items += [Item(p, None, True) for p in _images(root / "blur")]
        return "classes", items
    masks = {p.name[: -len("_mask" + p.suffix)]: p for p in root.glob("*_mask.*")}
    items = [Item(p, masks[p.stem], bool(_read_mask(masks[p.stem]).any())) for p in _images(root) if p.stem in masks]
    if items:
        return "flat", items
    raise ValueError(f"{root}: no known layout (image/+gt/, images/+masks/, NAME + NAME_mask, sharp/+blur/)")


def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise SourceError(f"cannot read mask {path}")
    return m > 127


def laplacian_variance(rgb: np.ndarray) -> float:
    """The classic whole-image sharpness score (higher = sharper)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def hf_blur_map(rgb: np.ndarray, window: int = 15) -> np.ndarray:
    """Local high-frequency energy turned into a blur score in [0, 1] (1 = no detail at all).

    Laplacian energy over a window relative to the image's own 95th percentile, so it
    adapts to each image's content the way a person tuning it by hand would.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    # Box-filtering rounds a little below zero on flat areas; clamp before the root.
    energy = np.maximum(cv2.blur(cv2.Laplacian(gray, cv2.CV_32F) ** 2, (window, window)), 0.0)
    ref = float(np.percentile(energy, 95)) + 1e-8
    return 1.0 - np.clip(np.sqrt(energy / ref), 0.0, 1.0)


@torch.no_grad()
def model_maps(model: BlurDetector, rgb: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255).to(device)
    out = model(x, with_aux=False)
    return out.probability[0, 0].float().cpu().numpy(), out.intensity[0, 0].float().cpu().numpy()


@dataclass
class MethodScores:
    """Everything one method produced on one split, enough to pick and apply thresholds."""

    hist: PixelHistogram = field(default_factory=PixelHistogram)
    image_scores: list[float] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)


def score_items(
    items: list[Item],
    model: BlurDetector,
    device: torch.device,
    *,
    keep_maps: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, MethodScores], list[bool], list[Item]]:
    """Run the model and both baselines on every readable item."""
    scores = {OURS: MethodScores(), HF: MethodScores(), VOL: MethodScores()}
    labels, used = [], []
    for item in items:
        try:
            rgb = load_source(item.image)
            truth = _read_mask(item.mask) if item.mask is not None else None
        except SourceError as exc:
            log.warning("skipping %s: %s", item.image, exc)
            continue
        if truth is not None and truth.shape != rgb.shape[:2]:
            truth = (
                cv2.resize(
                    truth.astype(np.uint8),
                    (rgb.shape[1], rgb.shape[0]),
                    interpolation=cv2.INTER_NEAREST,
                )
                > 0
            )
        prob, _ = model_maps(model, rgb, device)
        hf = hf_blur_map(rgb)
        valid = item.observable(rgb)
        for name, m in ((OURS, prob), (HF, hf)):
            if truth is not None:
                scores[name].hist.add(m, truth, valid)
            scores[name].image_scores.append(image_score(m, valid=valid))
            if keep_maps:
                scores[name].maps.append(m)
        scores[VOL].image_scores.append(-laplacian_variance(rgb))
        labels.append(item.blurred)
        used.append(item)
        if progress:
            progress(1)
    return scores, labels, used


def evaluate(
    model: BlurDetector,
    val_items: list[Item],
    test_items: list[Item],
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict, dict[str, MethodScores], list[bool], list[Item]]:
    """Pick each method's thresholds on ``val_items``; report all metrics on ``test_items``."""
    val, val_labels, _ = score_items(val_items, model, device, progress=progress)
    test, test_labels, used = score_items(test_items, model, device, keep_maps=True, progress=progress)
    has_masks = any(i.mask is not None for i in test_items)
    results: dict = {
        "n_val": len(val_labels),
        "n_test": len(test_labels),
        "pixel": {},
        "image": {},
        "thresholds": {},
    }
    for name in (OURS, HF, VOL):
        th: dict[str, float] = {}
        if has_masks and name != VOL:
            th["pixel"], _ = val[name].hist.best_threshold("blur_iou")
            m = pixel_metrics(*test[name].hist.counts_at(th["pixel"]))
            _, _, m["pr_auc"] = test[name].hist.pr_curve()
            results["pixel"][name] = m
        th["image"], _ = best_image_threshold(np.array(val[name].image_scores), np.array(val_labels))
        results["image"][name] = image_metrics(np.array(test[name].image_scores), np.array(test_labels), th["image"])
        results["thresholds"][name] = th
    return results, test, test_labels, used


def split_items(items: list[Item], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Seeded val/test split of one folder when no separate validation folder is given."""
    shuffled = sorted(items, key=lambda i: str(i.image))
    random.Random(seed).shuffle(shuffled)
    n = max(1, int(round(len(shuffled) * val_fraction)))
    return shuffled[n:], shuffled[:n]


LABELS = {OURS: "SMBlurDetect (ours)", HF: "HF-energy map", VOL: "Laplacian variance"}


def markdown_tables(results: dict) -> str:
    """The results as two Markdown tables (pixel level, image level), methods as columns."""
    out = []
    for level, keys in (
        (
            "pixel",
            (
                "pixel_accuracy",
                "mean_iou",
                "weighted_iou",
                "mean_class_accuracy",
                "blur_precision",
                "blur_recall",
                "blur_f1",
                "blur_iou",
                "pr_auc",
            ),
        ),
        ("image", ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")),
    ):
        methods = [m for m in (OURS, HF, VOL) if m in results[level]]
        if not methods:
            continue
        out.append(
            f"**{level.capitalize()} level** (test n = {results['n_test']}; "
            f"thresholds from validation n = {results['n_val']})\n"
        )
        out.append("| metric | " + " | ".join(LABELS[m] for m in methods) + " |")
        out.append("|---|" + "---:|" * len(methods))
        for k in keys:
            out.append(f"| {k} | " + " | ".join(f"{results[level][m][k]:.4f}" for m in methods) + " |")
        out.append("| threshold | " + " | ".join(f"{results['thresholds'][m][level]:.4g}" for m in methods) + " |")
        out.append("")
    return "\n".join(out)


def write_report(
    results: dict, test: dict[str, MethodScores], labels: list[bool], items: list[Item], out: Path
) -> None:
    """results.json, results.md, pr_curve.png, roc_curve.png and worst_cases.png under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_tables(results))
    if results["pixel"]:
        fig, ax = plt.subplots(figsize=(5, 4))
        for m in results["pixel"]:
            p, r, ap = test[m].hist.pr_curve()
            ax.plot(r, p, label=f"{LABELS[m]} (AP {ap:.3f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("pixel-level PR (test)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "pr_curve.png", dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for m in results["image"]:
        fpr, tpr = roc_curve(np.array(test[m].image_scores), np.array(labels))
        ax.plot(fpr, tpr, label=f"{LABELS[m]} (AUC {results['image'][m]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.5)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("image-level ROC (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "roc_curve.png", dpi=100)
    plt.close(fig)
    write_worst_cases(results, test, items, out / "worst_cases.png")


def _worst(results: dict, test: dict[str, MethodScores], items: list[Item]) -> Iterator[tuple[float, int]]:
    th = results["thresholds"][OURS].get("pixel", 0.5)
    for i, (item, prob) in enumerate(zip(items, test[OURS].maps, strict=True)):
        if item.mask is None:
            continue
        truth = _read_mask(item.mask)
        pred = prob >= th
        union = (truth | pred).sum()
        yield ((truth & pred).sum() / union if union else 1.0), i


def write_worst_cases(
    results: dict,
    test: dict[str, MethodScores],
    items: list[Item],
    path: Path,
    n: int = 8,
    tile: int = 160,
) -> None:
    """Rows of image | ground truth | our probability for the lowest-IoU test images."""
    worst = sorted(_worst(results, test, items))[:n]
    rows = []
    for iou, i in worst:
        rgb = load_source(items[i].image)
        truth = (_read_mask(items[i].mask) * 255).astype(np.uint8)
        heat = cv2.applyColorMap((test[OURS].maps[i] * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
        tiles = [
            cv2.resize(x, (tile, tile), interpolation=cv2.INTER_AREA)
            for x in (rgb[..., ::-1], cv2.cvtColor(truth, cv2.COLOR_GRAY2BGR), heat)
        ]
        row = np.concatenate(tiles, axis=1)
        cv2.putText(row, f"IoU {iou:.2f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
        rows.append(row)
    if rows:
        cv2.imwrite(str(path), np.concatenate(rows, axis=0))
