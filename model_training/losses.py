"""The composite loss of paper 3.4, every weight and constant configurable.

L = w_seg·(BCE + Dice + FocalTversky) + w_reg·Huber(intensity | blur pixels)
    + w_prev·(mean p − π)² + w_aux·Σ_s w_s·L_seg(aux_s, downsampled target)

Dice and Tversky are computed per image and averaged, so an image with no blur still
pushes its prediction towards zero instead of vanishing inside a batch-wide sum.

Every mask term takes an optional ``valid`` map (1 where blur is observable, see
:mod:`qc_worker.detector.observable`): pixels outside it are neither blurred nor sharp, so
they add nothing to BCE, Dice, Tversky, the prevalence term or the auxiliary heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from qc_worker.detector.model import DetectorOutput


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    w_seg: float = Field(1.0, ge=0)
    w_reg: float = Field(1.0, ge=0)
    w_prev: float = Field(0.5, ge=0)
    w_aux: float = Field(0.4, ge=0)
    w_bce: float = Field(1.0, ge=0)
    w_dice: float = Field(1.0, ge=0)
    w_tversky: float = Field(1.0, ge=0)
    #: Tversky: alpha weighs false negatives, beta false positives (paper defaults).
    tversky_alpha: float = 0.7
    tversky_beta: float = 0.3
    tversky_gamma: float = 0.75
    smooth: float = Field(1.0, gt=0)
    #: Intensity lives in [0, 1], so the quadratic zone is kept small.
    huber_delta: float = Field(0.1, gt=0)
    #: Expected share of blurred pixels in the training distribution.
    prevalence: float = Field(0.15, ge=0, le=1)
    #: One weight per auxiliary head, deepest first.
    aux_weights: tuple[float, ...] = (0.25, 0.5, 0.75)


def _ones(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(x, dtype=torch.float32) if valid is None else valid.float()


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    weight = _ones(per_pixel, valid)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


def dice_loss(
    prob: torch.Tensor, target: torch.Tensor, smooth: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    dims = tuple(range(1, prob.ndim))
    if valid is not None:
        prob, target = prob * valid, target * valid
    inter = (prob * target).sum(dims)
    dice = (2 * inter + smooth) / (prob.sum(dims) + target.sum(dims) + smooth)
    return (1 - dice).mean()


def focal_tversky_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    smooth: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    dims = tuple(range(1, prob.ndim))
    if valid is not None:
        prob, target = prob * valid, target * valid
    tp = (prob * target).sum(dims)
    fn = ((1 - prob) * target).sum(dims)
    fp = (prob * (1 - target)).sum(dims)
    ti = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    return ((1 - ti).clamp_min(0) ** gamma).mean()


def masked_huber_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber loss averaged over ground-truth blur pixels only (zero when there are none)."""
    weight = (mask > 0.5).float()
    per_pixel = F.huber_loss(pred.float(), target.float(), reduction="none", delta=delta)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


def prevalence_loss(prob: torch.Tensor, prevalence: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    weight = _ones(prob, valid)
    mean = (prob.float() * weight).sum() / weight.sum().clamp_min(1.0)
    return (mean - prevalence) ** 2


class CompositeLoss(torch.nn.Module):
    def __init__(self, config: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.config = config

    def segmentation(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        c = self.config
        prob = torch.sigmoid(logits.float())
        return {
            "bce": bce_loss(logits, target, valid),
            "dice": dice_loss(prob, target, c.smooth, valid),
            "tversky": focal_tversky_loss(
                prob, target, c.tversky_alpha, c.tversky_beta, c.tversky_gamma, c.smooth, valid
            ),
        }

    def _seg_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        return c.w_bce * terms["bce"] + c.w_dice * terms["dice"] + c.w_tversky * terms["tversky"]

    def forward(
        self,
        out: DetectorOutput,
        mask: torch.Tensor,
        intensity: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and each term as a float (for logging); ``valid`` as in the module doc."""
        c = self.config
        seg_terms = self.segmentation(out.logits, mask, valid)
        seg = self._seg_total(seg_terms)
        reg = masked_huber_loss(out.intensity, intensity, mask, c.huber_delta)
        prev = prevalence_loss(torch.sigmoid(out.logits.float()), c.prevalence, valid)
        aux = torch.zeros((), device=out.logits.device)
        if out.aux:
            if len(out.aux) != len(c.aux_weights):
                raise ValueError(f"{len(out.aux)} auxiliary outputs but {len(c.aux_weights)} aux_weights")
            for w, logits in zip(c.aux_weights, out.aux, strict=True):
                small = F.interpolate(mask.float(), size=logits.shape[-2:], mode="area")
                small_valid = (
                    None if valid is None else F.interpolate(valid.float(), size=logits.shape[-2:], mode="area")
                )
                aux = aux + w * self._seg_total(self.segmentation(logits, small, small_valid))
        total = c.w_seg * seg + c.w_reg * reg + c.w_prev * prev + c.w_aux * aux
        terms = {k: float(v.detach()) for k, v in seg_terms.items()}
        terms.update(
            seg=float(seg.detach()),
            reg=float(reg.detach()),
            prev=float(prev.detach()),
            aux=float(aux.detach()),
            total=float(total.detach()),
        )
        return total, terms
