"""`qc-train synth` end to end: files, parameters, contact sheet, clear errors."""

import json

import cv2
import pytest
from typer.testing import CliRunner

from model_training.cli import app

runner = CliRunner()


@pytest.mark.integration
def test_synth_writes_a_complete_dataset(photo_dir, tmp_path):
    out = tmp_path / "ds"
    res = runner.invoke(
        app,
        [
            "synth",
            "--sources",
            str(photo_dir),
            "--out",
            str(out),
            "--count",
            "6",
            "--seed",
            "2",
            "--workers",
            "2",
            "--mask-sources",
            "random",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 6 samples" in res.output
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 6
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert rec["index"] == i and rec["source"].startswith("photo")
        img = cv2.imread(str(out / "images" / f"{i:06d}.png"))
        mask = cv2.imread(str(out / "masks" / f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
        inten = cv2.imread(str(out / "intensity" / f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
        assert img.shape[:2] == mask.shape == inten.shape
        assert (inten[mask == 0] == 0).all()
        assert rec["blur_fraction"] == pytest.approx((mask > 0).mean(), abs=1e-4)
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] >= 6 * 100
    recipe = json.loads((out / "dataset.json").read_text())
    assert recipe["seed"] == 2 and len(recipe["sources"]) == 4


@pytest.mark.integration
def test_the_same_seed_writes_the_same_files_whatever_the_worker_count(photo_dir, tmp_path):
    args = [
        "synth",
        "--sources",
        str(photo_dir),
        "--count",
        "4",
        "--seed",
        "9",
        "--mask-sources",
        "random",
    ]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--workers", "1"]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--workers", "2"]).exit_code == 0
    for sub in ("images", "masks", "intensity"):
        for i in range(4):
            a = (tmp_path / "a" / sub / f"{i:06d}.png").read_bytes()
            assert a == (tmp_path / "b" / sub / f"{i:06d}.png").read_bytes()


def test_missing_or_empty_sources_fail_with_a_clear_message(tmp_path):
    res = runner.invoke(app, ["synth", "--sources", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "zero.jpg").write_bytes(b"")
    res = runner.invoke(app, ["synth", "--sources", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no usable source images" in res.output


def test_unknown_mask_source_and_bad_split_are_refused(photo_dir, tmp_path):
    res = runner.invoke(
        app,
        [
            "synth",
            "--sources",
            str(photo_dir),
            "--out",
            str(tmp_path / "o"),
            "--mask-sources",
            "magic",
        ],
    )
    assert res.exit_code == 2 and "unknown mask source" in res.output
    res = runner.invoke(app, ["synth", "--sources", str(photo_dir), "--out", str(tmp_path / "o"), "--split", "test"])
    assert res.exit_code != 0


def test_fit_options_left_out_keep_the_config_files_values(tmp_path):
    from model_training.cli import _fit_config

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"stage_steps": [10, 20, 30], "stage_crop": [64, 96, 96], "lr": 3e-4, "amp": "off"}))
    untyped = dict.fromkeys(("encoder", "stage_steps", "stage_crop", "lr", "amp", "seed", "log_every"))
    cfg = _fit_config(config, tmp_path / "out", [tmp_path], untyped)
    assert cfg.stage_steps == (10, 20, 30) and cfg.stage_crop == (64, 96, 96)
    assert cfg.lr == 3e-4 and cfg.amp == "off" and cfg.seed == 0
    cfg = _fit_config(config, tmp_path / "out", [tmp_path], {**untyped, "lr": 1e-3, "seed": 5})
    assert cfg.lr == 1e-3 and cfg.seed == 5 and cfg.stage_steps == (10, 20, 30)


def test_fit_without_a_config_file_takes_the_train_config_defaults(tmp_path):
    from model_training.cli import _fit_config
    from model_training.train import TrainConfig

    cfg = _fit_config(None, tmp_path / "out", [tmp_path], {"lr": None, "stage_steps": None})
    assert cfg == TrainConfig(out=tmp_path / "out", sources=[tmp_path])
