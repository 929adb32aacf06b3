"""The blur-frequency channel: local high-frequency energy relative to local contrast.

Motion blur removes high frequencies while keeping low ones, so the ratio of Laplacian
energy to local standard deviation drops where an image is blurred, whatever its
brightness or contrast. It is computed by fixed (non-trainable) filters inside the model,
so training and inference can never compute it differently, and its whole definition is
saved in each checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FrequencySpec:
    """Everything that defines the channel; stored in checkpoints and checked on load."""

    kind: str = "laplacian_energy_ratio"
    window: int = 7
    contrast_floor: float = 0.01
    #: Fixed affine normalisation of log1p(ratio): its mean and spread over the sharp
    #: sample photos, so the channel is about zero-mean, unit-spread on sharp content.
    offset: float = 0.7
    scale: float = 0.35

    def to_dict(self) -> dict:
        return asdict(self)


class BlurFrequency(nn.Module):
    """RGB in [0, 1] (N, 3, H, W) -> normalised frequency channel (N, 1, H, W)."""

    def __init__(self, spec: FrequencySpec = FrequencySpec()) -> None:
        super().__init__()
        if spec.kind != "laplacian_energy_ratio":
            raise ValueError(f"unknown frequency channel kind {spec.kind!r}")
        if spec.window < 3 or spec.window % 2 == 0:
            raise ValueError(f"frequency window must be an odd number >= 3, got {spec.window}")
        self.spec = spec
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        self.register_buffer("laplacian", lap, persistent=False)
        self.register_buffer("luma", luma, persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        s = self.spec
        gray = (rgb.float() * self.luma).sum(dim=1, keepdim=True)
        lap = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.laplacian)
        pad = s.window // 2
        box = lambda x: F.avg_pool2d(F.pad(x, (pad,) * 4, mode="replicate"), s.window, stride=1)
        energy = box(lap * lap).clamp_min(0).sqrt()
        mean = box(gray)
        std = (box(gray * gray) - mean * mean).clamp_min(0).sqrt()
        ratio = energy / (std + s.contrast_floor)
        return (torch.log1p(ratio) - s.offset) / s.scale
