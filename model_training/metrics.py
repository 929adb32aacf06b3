"""Pixel- and image-level metrics of paper 4.2, and threshold search.

Pixel metrics are computed from per-class histograms of predicted probability (1000
bins), so a PR curve over millions of pixels needs kilobytes, and the grid search for the
best threshold reads every candidate from the same histograms.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

BINS = 1000


class PixelHistogram:
    """Accumulates probability histograms of blurred and sharp ground-truth pixels."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def add(self, prob: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Count pixels by class; pixels where ``valid`` is false (unobservable) are left out."""
        idx = np.clip((np.asarray(prob, np.float64) * self.bins).astype(np.int64), 0, self.bins - 1)
        t = np.asarray(truth) > 0.5
        if valid is not None:
            keep = np.asarray(valid) > 0.5
            idx, t = idx[keep], t[keep]
        self.pos += np.bincount(idx[t], minlength=self.bins)
        self.neg += np.bincount(idx[~t], minlength=self.bins)

    def thresholds(self) -> np.ndarray:
        return np.arange(self.bins) / self.bins

    def counts_at(self, threshold: float) -> tuple[int, int, int, int]:
        """(tp, fp, fn, tn) for "blurred when prob >= threshold"."""
        k = int(np.clip(np.ceil(threshold * self.bins - 1e-9), 0, self.bins))
        tp, fp = int(self.pos[k:].sum()), int(self.neg[k:].sum())
        return tp, fp, int(self.pos.sum()) - tp, int(self.neg.sum()) - fp

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Precision, recall at every bin edge, and the area under the PR curve (AP)."""
        tp = np.cumsum(self.pos[::-1])[::-1].astype(np.float64)
        fp = np.cumsum(self.neg[::-1])[::-1].astype(np.float64)
        total_pos = max(float(self.pos.sum()), 1.0)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / total_pos
        # Step-wise area, recall decreasing along the thresholds.
        r = np.concatenate([recall, [0.0]])
        ap = float(np.sum((r[:-1] - r[1:]) * precision))
        return precision, recall, ap

    def best_threshold(self, key: str = "blur_iou") -> tuple[float, float]:
        """The threshold maximising ``key`` of :func:`pixel_metrics`, and that value."""
        best = (0.5, -1.0)
        for t in self.thresholds()[1:]:
            v = pixel_metrics(*self.counts_at(float(t)))[key]
            if v > best[1]:
                best = (float(t), v)
        return best


def pixel_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """CUHK-style pixel metrics from a confusion matrix (blur = positive class)."""
    total = max(tp + fp + fn + tn, 1)
    iou_blur = tp / max(tp + fp + fn, 1)
    iou_sharp = tn / max(tn + fn + fp, 1)
    n_blur, n_sharp = tp + fn, tn + fp
    acc_blur = tp / max(n_blur, 1)
    acc_sharp = tn / max(n_sharp, 1)
    precision = tp / max(tp + fp, 1)
    return {
        "pixel_accuracy": (tp + tn) / total,
        "mean_iou": (iou_blur + iou_sharp) / 2,
        "weighted_iou": (n_blur * iou_blur + n_sharp * iou_sharp) / total,
        "mean_class_accuracy": (acc_blur + acc_sharp) / 2,
        "blur_precision": precision,
        "blur_recall": acc_blur,
        "blur_f1": 2 * precision * acc_blur / max(precision + acc_blur, 1e-12),
        "blur_iou": iou_blur,
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity; ties count half."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score, for plotting."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    tps = np.cumsum(labels[order])
    fps = np.cumsum(~labels[order])
    tpr = np.concatenate([[0.0], tps / max(labels.sum(), 1)])
    fpr = np.concatenate([[0.0], fps / max((~labels).sum(), 1)])
    return fpr, tpr


def image_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Image-level classification metrics at ``threshold`` ("blurred when score >= it")."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp = int((pred & labels).sum())
    tn = int((~pred & ~labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "accuracy": (tp + tn) / max(len(labels), 1),
        "precision": precision,
        "recall": recall,
        "specificity": tn / max(tn + fp, 1),
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "roc_auc": roc_auc(scores, labels),
    }


def best_image_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The score threshold maximising F1 (paper 4.2), searched over the observed scores."""
    best = (0.5, -1.0)
    for t in np.unique(np.asarray(scores)):
        f1 = image_metrics(scores, labels, float(t))["f1"]
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def image_score(prob: np.ndarray, quantile: float = 0.99, valid: np.ndarray | None = None) -> float:
    """How blurred an image is, from its probability map: a high quantile.

    A high quantile rather than the mean or the maximum, so one small blurred face counts
    while a single noisy pixel does not. With ``valid`` only observable pixels count (an
    image with none scores 0: nothing in it could show blur).
    """
    p = np.asarray(prob, np.float32)
    if valid is not None:
        p = p[np.asarray(valid) > 0.5]
        if p.size == 0:
            return 0.0
    return float(np.quantile(p, quantile))
