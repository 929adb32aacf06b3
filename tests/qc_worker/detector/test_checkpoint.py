"""Checkpoints round-trip exactly and refuse corrupt or mismatched files clearly."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qc_worker.detector.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from qc_worker.detector.model import BlurDetector, ModelConfig

TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


def _model():
    torch.manual_seed(0)
    model = BlurDetector(TINY).eval()
    with torch.no_grad():
        model.train()
        model(torch.rand(2, 3, 64, 64))  # move BatchNorm statistics off their defaults
        model.eval()
    return model


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(
        path,
        model,
        thresholds={"pixel": 0.4},
        metrics={"blur_iou": 0.8},
        training={"steps": 3},
        dtype=torch.float32,
    )
    loaded, meta = load_checkpoint(path)
    x = torch.rand(1, 3, 80, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.intensity, b.intensity, rtol=0, atol=0)
    assert meta.thresholds == {"pixel": 0.4} and meta.metrics["blur_iou"] == 0.8
    assert meta.model == TINY and meta.model.frequency == TINY.frequency
    assert read_meta(path).checksum == meta.checksum


def test_fp16_export_stays_close(tmp_path):
    model = _model()
    path = tmp_path / "m16.safetensors"
    save_checkpoint(path, model)
    loaded, meta = load_checkpoint(path)
    assert meta.dtype == "float16"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model(x).logits), loaded(x).probability, atol=2e-2, rtol=0)


def test_edited_weights_fail_the_checksum(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors|cannot read"):
        load_checkpoint(path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="qc-train export"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_mismatched_architecture_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    cfg = json.loads(header["model"])
    cfg["decoder_channels"] = [64, 32, 16, 8, 8]
    header["model"] = json.dumps(cfg)
    save_file(load_file(str(path)), str(path), metadata=header)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


def test_an_encoders_own_input_normalisation_travels_to_serving(tmp_path):
    config = ModelConfig(
        encoder="efficientnet-lite0",
        decoder_channels=(16, 16, 8, 8, 8),
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    model = BlurDetector(config).eval()
    path = tmp_path / "lite.safetensors"
    save_checkpoint(path, model, dtype=torch.float32)
    loaded, meta = load_checkpoint(path)
    assert meta.model.mean == meta.model.std == (0.5, 0.5, 0.5)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)


def test_a_saved_checkpoint_gets_the_umask_mode_not_0600(tmp_path):
    """safetensors creates its file 0600; a shipped weights file must be readable like any other."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, _model(), dtype=torch.float16)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
