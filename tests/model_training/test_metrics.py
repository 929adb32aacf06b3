"""Metrics against values worked out by hand."""

import numpy as np
import pytest

from model_training.metrics import (
    PixelHistogram,
    best_image_threshold,
    image_metrics,
    image_score,
    pixel_metrics,
    roc_auc,
)


def test_pixel_metrics_by_hand():
    m = pixel_metrics(tp=30, fp=10, fn=20, tn=140)
    assert m["blur_iou"] == pytest.approx(30 / 60)
    assert m["mean_iou"] == pytest.approx((30 / 60 + 140 / 170) / 2)
    assert m["weighted_iou"] == pytest.approx((50 * 0.5 + 150 * 140 / 170) / 200)
    assert m["pixel_accuracy"] == pytest.approx(170 / 200)
    assert m["blur_precision"] == pytest.approx(0.75) and m["blur_recall"] == pytest.approx(0.6)
    assert m["blur_f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["mean_class_accuracy"] == pytest.approx((0.6 + 140 / 150) / 2)


def test_histogram_counts_match_direct_thresholding():
    rng = np.random.default_rng(0)
    prob = rng.random((50, 60))
    truth = rng.random((50, 60)) < prob
    h = PixelHistogram()
    h.add(prob, truth)
    for t in (0.1, 0.5, 0.83):
        pred = prob >= t
        direct = (
            int((pred & truth).sum()),
            int((pred & ~truth).sum()),
            int((~pred & truth).sum()),
            int((~pred & ~truth).sum()),
        )
        assert h.counts_at(t) == pytest.approx(direct, abs=int(prob.size * 0.002))
    _, _, ap = h.pr_curve()
    assert 0.6 < ap < 0.9
    t, iou = h.best_threshold()
    assert 0 < t < 0.6 and iou == pytest.approx(pixel_metrics(*h.counts_at(t))["blur_iou"])


def test_perfect_and_random_pr_auc():
    h = PixelHistogram()
    h.add(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0]))
    assert h.pr_curve()[2] == pytest.approx(1.0)


def test_roc_auc_by_hand_with_ties():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([0.5, 0.6]), np.array([1, 1])))


def test_image_metrics_and_threshold_search():
    scores = np.array([0.1, 0.2, 0.6, 0.7, 0.4])
    labels = np.array([0, 0, 1, 1, 1])
    m = image_metrics(scores, labels, 0.5)
    assert m["accuracy"] == pytest.approx(0.8) and m["recall"] == pytest.approx(2 / 3) and m["specificity"] == 1.0
    t, f1 = best_image_threshold(scores, labels)
    assert t == pytest.approx(0.4) and f1 == pytest.approx(1.0)


def test_image_score_counts_a_small_blurred_region_but_not_one_pixel():
    prob = np.zeros((100, 100))
    prob[0, 0] = 1.0
    assert image_score(prob) == 0.0
    prob[:5, :] = 0.9
    assert image_score(prob) == pytest.approx(0.9)
