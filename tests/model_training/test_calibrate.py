"""qc-train calibrate: verdicts on real-blur folders and unblurred photos, threshold choice."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from model_training.calibrate import (
    RealItem,
    calibrate,
    group_table,
    markdown,
    objective,
    realdev_items,
)
from model_training.cli import app
from qc_worker.config import Settings
from qc_worker.detector.observable import observable_map
from tests.model_training.photos import make_photo
from tests.workers import tiny_checkpoint

runner = CliRunner()


class _Fake:
    """A scored image whose verdict at threshold t is decided by one number (no model)."""

    def __init__(self, group: str, blurred: bool, level: float) -> None:
        self.item = RealItem(Path(f"/x/{group}/{level}.png"), group, blurred)
        h = w = 60
        self.rgb = np.repeat((make_photo(int(level * 100), (h, w))[..., :1]), 3, axis=2)
        self.prob = np.full((h, w), level, np.float32)
        self.inten = np.zeros((h, w), np.float32)
        self.subjects = ([], None)
        self.observable = observable_map(self.rgb)
        self.score = level
        self.median = 1 - level
        self.laplacian = -level
        self.hf = level
        self.coarse_medians = {}


def test_group_table_counts_right_verdicts_both_ways():
    items = [
        _Fake("levin_blur", True, 0.9),
        _Fake("levin_sharp", False, 0.9),
        _Fake("levin_sharp", False, 0.1),
    ]
    table = group_table(items, ["reject", "reject", "pass"])
    assert table["levin_blur"] == {"n": 1, "right": 1, "pass": 0, "review": 0, "reject": 1}
    assert table["levin_sharp"]["right"] == 1 and table["levin_sharp"]["n"] == 2
    assert objective(table) == pytest.approx((1.0 + 0.5) / 2)


def test_the_threshold_that_separates_blurred_from_sharp_is_chosen():
    settings = Settings(_env_file=None)
    scored = [_Fake("levin_blur", True, p) for p in (0.7, 0.8, 0.9)]
    scored += [_Fake("levin_sharp", False, p) for p in (0.3, 0.4, 0.5)]
    scored += [_Fake("photos_val", False, 0.55)]
    result = calibrate(scored, settings, grid=(0.2, 0.45, 0.6, 0.95))
    assert result["threshold"] == 0.6
    assert result["groups"]["levin_blur"]["right"] == 3
    assert result["groups"]["levin_sharp"]["right"] == 3
    frozen = calibrate(scored, settings, frozen=0.2)
    assert frozen["threshold"] == 0.2 and frozen["groups"]["levin_sharp"]["right"] == 0
    assert result["auc"]["levin"]["ours"] == pytest.approx(1.0)
    assert result["auc"]["levin"]["ours_median"] == pytest.approx(0.0)


def test_a_pixel_range_keeps_the_threshold_inside_it():
    settings = Settings(_env_file=None)
    scored = [_Fake("levin_blur", True, p) for p in (0.7, 0.8, 0.9)]
    scored += [_Fake("levin_sharp", False, p) for p in (0.3, 0.4, 0.5)]
    result = calibrate(scored, settings, grid=(0.2, 0.45, 0.6, 0.95), pixel_range=(0.4, 0.5))
    assert result["threshold"] == 0.45  # 0.6 separates better but lies outside the window
    assert {r["threshold"] for r in result["sweep"]} == {0.45}
    assert "pixel threshold in 0.4..0.5" in result["chosen_by"]
    with pytest.raises(ValueError, match="no candidate pixel threshold"):
        calibrate(scored, settings, grid=(0.2, 0.95), pixel_range=(0.4, 0.5))


def test_a_whole_frame_threshold_is_chosen_when_frame_blur_stays_under_the_pixel_one():
    settings = Settings(_env_file=None)
    frame_blur = [_Fake("levin_blur", True, p) for p in (0.3, 0.35, 0.4)]
    sharp = [_Fake("levin_sharp", False, p) for p in (0.02, 0.03)] + [_Fake("photos_val", False, 0.01)]
    scored = [*frame_blur, _Fake("levin_blur", True, 0.9), *sharp]
    for s in scored:
        s.median = s.score  # uniform maps: the median is the level, as screening computes it
    result = calibrate(scored, settings, grid=(0.5, 0.6), frame_grid=(0.1, 0.5, None))
    assert (result["threshold"], result["frame_threshold"]) == (0.6, 0.1)
    assert result["groups"]["levin_blur"]["right"] == 4 and result["groups"]["levin_sharp"]["right"] == 2
    assert result["objective"] == max(r["objective"] for r in result["sweep"]) == 1.0
    assert {i["verdict"] for i in result["images"][:3]} == {"review"}
    assert "whole-frame median threshold 0.100" in markdown(result)
    frozen = calibrate(scored, settings, frozen=0.6, frozen_frame=None)
    assert frozen["frame_threshold"] is None and frozen["groups"]["levin_blur"]["right"] == 1


def _realdev(root: Path) -> Path:
    for sub, n in (
        ("levin/blur", 2),
        ("levin/sharp", 2),
        ("levin/kernels", 1),
        ("blur_only/video", 2),
    ):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            img = make_photo(i + len(sub), (96, 96))
            if "blur" in sub:
                img = cv2.blur(img, (9, 1))
            cv2.imwrite(str(root / sub / f"im{i}.png"), img[..., ::-1])
    return root


def test_realdev_items_leave_the_kernels_out(tmp_path):
    items = realdev_items(_realdev(tmp_path / "realdev"))
    assert [i.group for i in items].count("levin_blur") == 2
    assert {i.group for i in items} == {"levin_blur", "levin_sharp", "blur_only"}
    assert not [i for i in items if "kernels" in str(i.path)]


@pytest.mark.integration
def test_calibrate_command_writes_its_results(tmp_path):
    root = _realdev(tmp_path / "realdev")
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for i in range(2):
        p = photos / f"p{i}.png"
        cv2.imwrite(str(p), make_photo(10 + i, (80, 100))[..., ::-1])
        paths.append(str(p))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": [], "val": paths[:1], "test": paths[1:]}))
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "cal"
    r = runner.invoke(
        app,
        [
            "calibrate",
            "--checkpoint",
            str(ckpt),
            "--realdev",
            str(root),
            "--splits",
            str(splits),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    result = json.loads((out / "calibration.json").read_text())
    assert set(result["groups"]) == {
        "levin_blur",
        "levin_sharp",
        "blur_only",
        "photos_val",
        "photos_test",
    }
    assert len(result["images"]) == 8
    assert "right verdicts" in (out / "calibration.md").read_text()
    assert all(0 <= i["median"] <= i["score"] <= 1 for i in result["images"])
    assert "frame_threshold" in result and result["objective"] == max(r["objective"] for r in result["sweep"])
    missing = runner.invoke(
        app,
        [
            "calibrate",
            "--checkpoint",
            str(ckpt),
            "--realdev",
            str(tmp_path / "nope"),
            "--splits",
            str(splits),
            "--out",
            str(out),
        ],
    )
    assert missing.exit_code == 2 and "realdev folder" in " ".join(missing.output.split())


def _calibrate_args(tmp_path: Path, thresholds: dict | None = None) -> list[str]:
    """`qc-train calibrate` on a small realdev tree and one validation photo, with a tiny
    checkpoint carrying ``thresholds``; the caller adds ``--out`` and the options under test."""
    root = _realdev(tmp_path / "realdev")
    p = tmp_path / "p.png"
    cv2.imwrite(str(p), make_photo(3, (80, 100))[..., ::-1])
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": [], "val": [str(p)], "test": []}))
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", thresholds=thresholds)
    return ["calibrate", "--checkpoint", str(ckpt), "--realdev", str(root), "--splits", str(splits)]


@pytest.mark.integration
def test_calibrate_command_keeps_the_pixel_threshold_in_the_given_range(tmp_path):
    args = _calibrate_args(tmp_path)
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "cal"), "--pixel-range", "0.5,0.6"])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert 0.5 <= result["threshold"] <= 0.6

    assert all(0.5 <= s["threshold"] <= 0.6 for s in result["sweep"])
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--pixel-range", "high"])
    assert bad.exit_code == 2 and "--pixel-range 'high': give LOW,HIGH" in bad.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.integration
def test_calibrate_command_reads_the_frame_at_the_sizes_it_is_given_and_records_them(tmp_path):
    args = _calibrate_args(tmp_path)
    out = tmp_path / "cal"
    r = runner.invoke(app, [*args, "--out", str(out), "--pixel-range", "0,1", "--frame-scales", "1,0.5"])
    assert r.exit_code == 0, r.output
    result = json.loads((out / "calibration.json").read_text())
    assert result["frame_scales"] == [1.0, 0.5]
    assert "the frame read at 1x and 0.5x size (" in (out / "calibration.md").read_text()
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "plain"), "--pixel-range", "0,1"])
    assert plain.exit_code == 0, plain.output
    assert json.loads((tmp_path / "plain" / "calibration.json").read_text())["frame_scales"] == [1.0]
    bad = runner.invoke(app, [*args, "--out", str(out), "--frame-scales", "0.5"])
    assert bad.exit_code == 2 and "must include 1" in " ".join(bad.output.split())


@pytest.mark.integration
def test_calibrate_command_screens_in_the_arithmetic_it_is_given(tmp_path):
    args = _calibrate_args(tmp_path)
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "cal"), "--pixel-range", "0,1", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["precision"] == "fp32"
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "cal"), "--precision", "fp8"])
    assert bad.exit_code == 2 and "give auto, fp32 or bf16" in bad.output


@pytest.mark.integration
def test_calibrate_command_centres_its_window_on_the_checkpoints_blur_iou_threshold(tmp_path):
    args = _calibrate_args(tmp_path, thresholds={"pixel": 0.3, "pixel_iou": 0.55})

    r = runner.invoke(app, [*args, "--out", str(tmp_path / "cal")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert {s["threshold"] for s in result["sweep"]} == {0.45, 0.475, 0.5, 0.525, 0.55, 0.575, 0.6, 0.625, 0.65}
    assert "pixel threshold in 0.45..0.65" in result["chosen_by"]

    narrow = runner.invoke(app, [*args, "--out", str(tmp_path / "narrow"), "--pixel-window", "0.03"])
    assert narrow.exit_code == 0, narrow.output
    swept = json.loads((tmp_path / "narrow" / "calibration.json").read_text())["sweep"]
    assert {s["threshold"] for s in swept} == {0.525, 0.55, 0.575}

    anywhere = runner.invoke(app, [*args, "--out", str(tmp_path / "any"), "--pixel-range", "0,1"])
    assert anywhere.exit_code == 0, anywhere.output
    swept = json.loads((tmp_path / "any" / "calibration.json").read_text())["sweep"]
    assert min(s["threshold"] for s in swept) == 0.2 and max(s["threshold"] for s in swept) > 0.9

    empty = runner.invoke(app, [*args, "--out", str(tmp_path / "empty"), "--pixel-range", "0.01,0.02"])
    assert empty.exit_code == 2 and "no candidate pixel threshold lies in 0.01..0.02" in empty.output
    assert not (tmp_path / "empty").exists()


@pytest.mark.integration
def test_calibrate_command_warns_when_the_checkpoint_has_no_blur_iou_threshold(tmp_path):
    args = _calibrate_args(tmp_path)
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "cal")])
    assert r.exit_code == 0, r.output
    assert "carries no blur-IoU threshold" in " ".join(r.output.split())
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["chosen_by"].endswith("photos_val")
