"""Each loss term against a value worked out by hand on a tiny tensor."""

import math

import pytest
import torch

from model_training.losses import (
    CompositeLoss,
    LossConfig,
    bce_loss,
    dice_loss,
    focal_tversky_loss,
    masked_huber_loss,
    prevalence_loss,
)
from qc_worker.detector.model import DetectorOutput

P = torch.tensor([[[[0.9, 0.2], [0.6, 0.1]]]])
T = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])


def test_bce_by_hand():
    logits = torch.logit(P)
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.1)) / 4
    assert float(bce_loss(logits, T)) == pytest.approx(expected, rel=1e-5)


def test_dice_by_hand():
    # inter = 0.9 + 0.6 + 0.1 = 1.6; sum p = 1.8; sum t = 3; smooth 1
    expected = 1 - (2 * 1.6 + 1) / (1.8 + 3 + 1)
    assert float(dice_loss(P, T, smooth=1.0)) == pytest.approx(expected, rel=1e-5)


def test_focal_tversky_by_hand():
    tp, fn, fp = 1.6, 0.1 + 0.4 + 0.9, 0.2
    ti = (tp + 1) / (tp + 0.7 * fn + 0.3 * fp + 1)
    expected = (1 - ti) ** 0.75
    got = focal_tversky_loss(P, T, alpha=0.7, beta=0.3, gamma=0.75, smooth=1.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_masked_huber_only_counts_blur_pixels():
    pred = torch.tensor([[[[0.5, 0.9], [0.0, 1.0]]]])
    target = torch.tensor([[[[0.2, 0.0], [0.05, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # delta 0.1: |0.3| -> 0.1 * (0.3 - 0.05) = 0.025 ; |0.05| -> 0.5 * 0.05^2 = 0.00125
    expected = (0.025 + 0.00125) / 2
    assert float(masked_huber_loss(pred, target, mask, delta=0.1)) == pytest.approx(expected, rel=1e-5)
    assert float(masked_huber_loss(pred, target, torch.zeros_like(mask), delta=0.1)) == 0.0


def test_prevalence_by_hand():
    assert float(prevalence_loss(P, 0.15)) == pytest.approx((0.45 - 0.15) ** 2, rel=1e-5)


def _out(logits, intensity=None, aux=None):
    return DetectorOutput(logits, intensity if intensity is not None else torch.sigmoid(logits), aux or [])


def test_all_zero_and_all_one_predictions_score_worse_than_the_truth():
    torch.manual_seed(0)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 8:20, 4:28] = 1
    inten = mask * 0.4
    aux_of = lambda logits: [torch.nn.functional.interpolate(logits, size=s, mode="area") for s in (4, 8, 16)]
    truth_logits = (mask * 2 - 1) * 8
    loss = CompositeLoss(LossConfig(prevalence=float(mask.mean())))
    truth = loss(_out(truth_logits, inten, aux_of(truth_logits)), mask, inten)[0]
    for const in (-8.0, 8.0):
        logits = torch.full_like(mask, const)
        worse = loss(_out(logits, torch.full_like(mask, 0.5), aux_of(logits)), mask, inten)[0]
        assert float(worse) > float(truth) + 0.5


def test_aux_terms_use_downsampled_targets_and_weights():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    logits = (mask * 2 - 1) * 6
    aux = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 16, 16)]
    cfg = LossConfig(aux_weights=(1.0, 0.0, 0.0), w_seg=0, w_reg=0, w_prev=0, w_aux=1)
    total, terms = CompositeLoss(cfg)(_out(logits, aux=aux), mask, mask)
    small = torch.zeros(1, 1, 4, 4)
    small[..., :2, :] = 1
    ref = CompositeLoss(cfg)
    expected = sum(ref.segmentation(aux[0], small).values())
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="aux_weights"):
        CompositeLoss(LossConfig(aux_weights=(1.0,)))(_out(logits, aux=aux), mask, mask)


def test_unobservable_pixels_add_nothing_to_the_mask_losses():
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    valid = torch.ones(2, 1, 8, 8)
    valid[:, :, :, 4:] = 0  # the right half is textureless
    target = target * valid
    loss_fn = CompositeLoss()
    out = DetectorOutput(logits, torch.zeros_like(logits), [])
    base, _ = loss_fn(out, target, torch.zeros_like(target), valid)
    # Whatever the model says where nothing can be seen, the loss stays the same ...
    changed = logits.clone()
    changed[:, :, :, 4:] = 25.0
    same, _ = loss_fn(
        DetectorOutput(changed, torch.zeros_like(logits), []),
        target,
        torch.zeros_like(target),
        valid,
    )
    assert float(same) == pytest.approx(float(base), rel=1e-6)
    # ... while without the map the same change is punished.
    full, _ = loss_fn(out, target, torch.zeros_like(target))
    worse, _ = loss_fn(DetectorOutput(changed, torch.zeros_like(logits), []), target, torch.zeros_like(target))
    assert float(worse) > float(full)


def test_bce_over_valid_pixels_by_hand():
    valid = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    expected = -(math.log(0.9) + math.log(0.6)) / 2
    assert float(bce_loss(torch.logit(P), T, valid)) == pytest.approx(expected, rel=1e-5)
