"""Evaluation end to end on a small synthetic test folder, and the export that follows it."""

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from model_training.cli import app
from model_training.evaluate import discover, hf_blur_map, laplacian_variance
from model_training.export import load_served_model, load_training_model
from qc_worker.detector.checkpoint import load_checkpoint
from qc_worker.detector.model import BlurDetector, ModelConfig

runner = CliRunner()
TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


def test_baselines_see_blur():
    rng = np.random.default_rng(0)
    sharp = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
    blurred = cv2.blur(sharp, (9, 1))
    assert laplacian_variance(blurred) < 0.5 * laplacian_variance(sharp)
    half = sharp.copy()
    half[:, 64:] = blurred[:, 64:]
    m = hf_blur_map(half)
    assert m[:, 80:120].mean() > m[:, 8:48].mean() + 0.2
    # The astronaut photo's flat black areas make the box filter round below zero.
    from pathlib import Path

    from qc_worker.images import decode_image

    astronaut = decode_image(Path(__file__).resolve().parents[2] / "samples" / "images" / "astronaut.jpg")
    assert np.isfinite(hf_blur_map(astronaut)).all()


def test_layouts_are_discovered(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 255
    for sub in ("image", "gt"):
        (tmp_path / "cuhk" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "cuhk" / "image" / "a.jpg"), img)
    cv2.imwrite(str(tmp_path / "cuhk" / "gt" / "a.png"), mask)
    assert discover(tmp_path / "cuhk")[0] == "cuhk" and discover(tmp_path / "cuhk")[1][0].blurred
    (tmp_path / "flat").mkdir()
    cv2.imwrite(str(tmp_path / "flat" / "b.jpg"), img)
    cv2.imwrite(str(tmp_path / "flat" / "b_mask.png"), np.zeros_like(mask))
    layout, items = discover(tmp_path / "flat")
    assert layout == "flat" and not items[0].blurred
    for sub in ("sharp", "blur"):
        (tmp_path / "cls" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "cls" / sub / "c.jpg"), img)
    layout, items = discover(tmp_path / "cls")
    assert layout == "classes" and sorted(i.blurred for i in items) == [False, True]
    with pytest.raises(ValueError, match="no known layout"):
        discover(tmp_path / "cls" / "sharp")


@pytest.mark.integration
def test_evaluate_and_export_end_to_end(photo_dir, tmp_path):
    data = tmp_path / "test-set"
    res = runner.invoke(
        app,
        [
            "synth",
            "--sources",
            str(photo_dir),
            "--out",
            str(data),
            "--count",
            "10",
            "--seed",
            "4",
            "--workers",
            "1",
            "--mask-sources",
            "random",
        ],
    )
    assert res.exit_code == 0, res.output
    torch.manual_seed(0)
    ckpt = tmp_path / "best_model.pt"
    torch.save({"model": BlurDetector(TINY).state_dict(), "model_config": TINY.to_dict(), "step": 7}, ckpt)
    out = tmp_path / "eval"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--out",
            str(out),
            "--val-fraction",
            "0.4",
        ],
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["layout"] == "synthetic" and results["n_val"] == 4 and results["n_test"] == 6
    assert set(results["pixel"]) == {"ours", "hf_energy"} and set(results["image"]) == {
        "ours",
        "hf_energy",
        "laplacian_variance",
    }
    for name in ("results.md", "pr_curve.png", "roc_curve.png", "worst_cases.png"):
        assert (out / name).exists(), name
    assert "Laplacian variance" in (out / "results.md").read_text()

    shipped = tmp_path / "detector.safetensors"
    res = runner.invoke(
        app,
        [
            "export",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(shipped),
            "--results",
            str(out / "results.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    model, meta = load_checkpoint(shipped)
    assert meta.dtype == "float16" and meta.training["checkpoint_step"] == 7
    assert meta.thresholds["pixel"] == meta.thresholds["pixel_iou"] == results["thresholds"]["ours"]["pixel"]
    assert meta.metrics["pixel"]["blur_iou"] == results["pixel"]["ours"]["blur_iou"]

    calibration = tmp_path / "calibration.json"
    calibration.write_text(
        json.dumps({"threshold": 0.925, "frame_threshold": None, "chosen_by": "test", "groups": {}, "auc": {}})
    )
    calibrated = tmp_path / "calibrated.safetensors"
    res = runner.invoke(
        app, ["export", "--checkpoint", str(shipped), "--out", str(calibrated), "--calibration", str(calibration)]
    )
    assert res.exit_code == 0, res.output
    thresholds = load_checkpoint(calibrated)[1].thresholds
    assert thresholds["pixel"] == 0.925 and thresholds["pixel_iou"] == results["thresholds"]["ours"]["pixel"]


def test_a_shipped_file_is_re_exported_with_a_new_calibration_and_the_same_tensors(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "best_model.pt"
    torch.save({"model": BlurDetector(TINY).state_dict(), "model_config": TINY.to_dict(), "step": 7}, ckpt)
    first, again = tmp_path / "first.safetensors", tmp_path / "again.safetensors"
    assert runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--out", str(first)]).exit_code == 0
    calibration = tmp_path / "calibration.json"
    groups = {"levin_blur": {"n": 1, "right": 1, "pass": 0, "review": 1, "reject": 0}}
    calibration.write_text(
        json.dumps(
            {
                "threshold": 0.7,
                "frame_threshold": 0.08,
                "frame_scales": [1.0, 0.5],
                "chosen_by": "test",
                "groups": groups,
                "auc": {},
            }
        )
    )
    res = runner.invoke(
        app,
        [
            "export",
            "--checkpoint",
            str(first),
            "--out",
            str(again),
            "--calibration",
            str(calibration),
        ],
    )
    assert res.exit_code == 0, res.output
    _, before = load_checkpoint(first)
    _, after = load_checkpoint(again)
    assert after.checksum == before.checksum and after.training == before.training
    assert after.thresholds["pixel"] == 0.7 and after.thresholds["frame"] == 0.08
    assert after.thresholds["frame_scales"] == [1.0, 0.5]
    assert after.thresholds["image"] == before.thresholds["image"] and after.metrics["real"]["groups"] == groups
    calibration.write_text(
        json.dumps(
            {
                "threshold": 0.6,
                "frame_threshold": None,
                "chosen_by": "test",
                "groups": groups,
                "auc": {},
            }
        )
    )
    assert (
        runner.invoke(
            app,
            [
                "export",
                "--checkpoint",
                str(again),
                "--out",
                str(first),
                "--calibration",
                str(calibration),
            ],
        ).exit_code
        == 0
    )
    # A calibration from before frame scales existed read the frame at full size only.
    assert "frame" not in load_checkpoint(first)[1].thresholds
    assert load_checkpoint(first)[1].thresholds["frame_scales"] == [1.0]


def test_evaluate_refuses_bad_input_clearly(tmp_path):
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2 and "error" in res.output


def test_evaluate_judges_the_model_as_screening_serves_it(tmp_path):
    torch.manual_seed(0)
    model = BlurDetector(TINY)
    with torch.no_grad():  # running statistics that are not the identity, so folding shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ckpt = tmp_path / "best_model.pt"
    torch.save({"model": model.state_dict(), "model_config": TINY.to_dict(), "step": 1}, ckpt)
    served = load_served_model(ckpt)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
    assert served.mask_head.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            served(x, with_aux=False).probability,
            load_training_model(ckpt)(x, with_aux=False).probability,
            rtol=1e-4,
            atol=1e-5,
        )
