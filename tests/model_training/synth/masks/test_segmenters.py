"""Learned segmenters load only given weights and say what is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from model_training.synth.masks import (
    MaskSource,
    MaskSourceError,
    SamSource,
    TorchScriptSegmenter,
    build_mask_sources,
)
from tests.model_training.synth.masks.support import iou, square_mask


def _save_scripted(module, path: Path) -> Path:
    import torch

    torch.jit.script(module).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_segmenter_foreground_map(tmp_path):
    import torch

    class Square(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.full((1, 1, x.shape[2], x.shape[3]), -4.0)
            logits[:, :, 8:24, 16:40] = 4.0
            return logits

    weights = _save_scripted(Square(), tmp_path / "square.pt")
    (source,) = build_mask_sources(["torchscript"], segmenter_weights=weights)
    assert isinstance(source, TorchScriptSegmenter) and isinstance(source, MaskSource)
    (instance,) = source(np.zeros((48, 64, 3), np.uint8))
    assert instance.kind == "segmenter"
    assert np.array_equal(instance.mask, square_mask((48, 64), 8, 24, 16, 40))
    assert instance.score == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_segmenter_instances_at_lower_resolution(tmp_path):
    import torch

    class TwoHalves(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[2] // 2, x.shape[3] // 2
            logits = torch.full((1, 3, h, w), -1.0)
            logits[:, 0, :, : w // 2] = 1.0
            logits[:, 1, :, w // 2 :] = 1.0
            return logits

    weights = _save_scripted(TwoHalves(), tmp_path / "halves.pt")
    instances = TorchScriptSegmenter(weights)(np.zeros((40, 80, 3), np.uint8))
    assert len(instances) == 2, "the all-negative channel yields no instance"
    assert iou(instances[0].mask, square_mask((40, 80), 0, 40, 0, 40)) > 0.9
    assert iou(instances[1].mask, square_mask((40, 80), 0, 40, 40, 80)) > 0.9


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_segmenter_rejects_missing_or_bad_weights(tmp_path):
    with pytest.raises(MaskSourceError, match="nothing.pt"):
        TorchScriptSegmenter(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(MaskSourceError, match="TorchScript"):
        TorchScriptSegmenter(junk)(np.zeros((8, 8, 3), np.uint8))


def test_sam_source_missing_weights_names_the_path(tmp_path):
    missing = tmp_path / "sam_vit_b.pth"
    with pytest.raises(MaskSourceError, match="sam_vit_b.pth"):
        SamSource(missing)


def test_sam_source_without_package_says_how_to_install(tmp_path, monkeypatch):
    weights = tmp_path / "sam_vit_b.pth"
    weights.write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(MaskSourceError, match="install segment-anything"):
        build_mask_sources(["sam"], sam_weights=weights)
