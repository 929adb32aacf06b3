"""Training: a tiny model overfits, runs resume exactly, DDP on two CPU processes works."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_training.data import BlurSynthDataset, list_sources
from model_training.losses import CompositeLoss
from model_training.metrics import pixel_metrics
from model_training.synth.config import NegativeConfig, SamplingConfig, SynthConfig
from model_training.train import TrainConfig, fit, initial_model, resolve_amp, source_weights
from qc_worker.detector.model import BlurDetector, ModelConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


@pytest.mark.slow  # 120 training steps: about 4 minutes of a shared 2-core CPU; CI runs it (make test)
def test_a_tiny_model_overfits_a_handful_of_samples(photo_dir):
    cfg = SynthConfig(
        negatives=NegativeConfig(prob=0.0, on_positive_prob=0.0),
        sampling=SamplingConfig(out_size=64, mask_centric_prob=1.0),
    )
    ds = BlurSynthDataset(list_sources(photo_dir), cfg, length=40, seed=1, mask_sources=("random",))
    items = [ds[i] for i in range(40)]
    items = [it for it in items if 0.1 < float(it["mask"].mean()) < 0.9][:4]
    assert len(items) == 4
    image = torch.stack([i["image"] for i in items])
    mask = torch.stack([i["mask"] for i in items])
    inten = torch.stack([i["intensity"] for i in items])
    torch.manual_seed(0)
    model = BlurDetector(TINY).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = CompositeLoss()
    losses = []
    for _ in range(120):
        loss, _ = loss_fn(model(image), mask, inten)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        prob = model(image).probability
    pred, truth = (prob >= 0.5).numpy(), mask.numpy() > 0.5
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert pixel_metrics(tp, fp, fn, tn)["blur_iou"] > 0.8


def _tiny_cfg(out: Path, photo_dir: Path, **kw) -> TrainConfig:
    return TrainConfig(
        out=out,
        sources=[photo_dir],
        stage_steps=(2, 2, 2),
        stage_crop=(64, 64, 64),
        batch_size=2,
        workers=0,
        val_every=3,
        val_samples=2,
        val_crop=64,
        log_every=1,
        checkpoint_every=100,
        warmup_steps=1,
        amp="off",
        mask_sources=("random",),
        val_fraction=0.25,
        test_fraction=0.25,
        **kw,
    )


@pytest.mark.integration
def test_fit_writes_its_outputs_and_resumes_exactly(photo_dir, tmp_path):
    straight = _tiny_cfg(tmp_path / "a", photo_dir, snapshot_every=2)
    fit(straight)
    snaps = sorted(p.name for p in (straight.out / "snapshots").iterdir())
    assert snaps == ["step_000002.pt", "step_000004.pt", "step_000006.pt"]
    last = torch.load(straight.out / "snapshots" / snaps[-1], weights_only=False)
    assert last["step"] == 6
    for k, v in last["model"].items():
        torch.testing.assert_close(v, torch.load(straight.out / "train_state.pt", weights_only=False)["model"][k])
    for name in (
        "train_state.pt",
        "best_model.pt",
        "metrics.jsonl",
        "curves.png",
        "splits.json",
        "train_config.json",
    ):
        assert (straight.out / name).exists(), name
    rows = [json.loads(line) for line in (straight.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 3, 3]
    assert "val_blur_iou" in rows[2] and "val_auc" in rows[5]
    splits = json.loads((straight.out / "splits.json").read_text())
    assert not set(splits["train"]) & set(splits["test"]) and splits["test"]

    halves = _tiny_cfg(tmp_path / "b", photo_dir)
    fit(halves, stop_after=3)
    fit(halves, resume=True)
    a = torch.load(straight.out / "train_state.pt", weights_only=False)["model"]
    b = torch.load(halves.out / "train_state.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.integration
def test_a_weight_average_is_what_validation_and_snapshots_keep_and_it_resumes_exactly(photo_dir, tmp_path):
    straight = _tiny_cfg(tmp_path / "a", photo_dir, snapshot_every=6, ema_decay=0.5)
    fit(straight)
    state = torch.load(straight.out / "train_state.pt", weights_only=False)
    snap = torch.load(straight.out / "snapshots" / "step_000006.pt", weights_only=False)["model"]
    average = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    moved = [k for k, v in snap.items() if v.is_floating_point() and not torch.equal(v, state["model"][k])]
    assert moved, "the snapshot holds the raw weights, not their average"
    for k, v in snap.items():
        torch.testing.assert_close(v, average[k])

    halves = _tiny_cfg(tmp_path / "b", photo_dir, snapshot_every=6, ema_decay=0.5)
    fit(halves, stop_after=3)
    fit(halves, resume=True)
    again = torch.load(halves.out / "snapshots" / "step_000006.pt", weights_only=False)["model"]
    for k in snap:
        torch.testing.assert_close(snap[k], again[k], rtol=1e-5, atol=1e-6)

    plain = _tiny_cfg(tmp_path / "c", photo_dir)
    fit(plain, stop_after=1)
    with pytest.raises(ValueError, match="no weight average"):
        fit(plain.model_copy(update={"ema_decay": 0.5}), resume=True)


@pytest.mark.integration
@pytest.mark.slow
def test_ddp_on_two_cpu_processes_follows_the_single_process_loss(photo_dir, tmp_path):
    """2 ranks x batch 2 see exactly the samples of 1 process x batch 4 (indices are
    (step * world + rank) * batch + j), so with averaged gradients the two loss curves
    must nearly coincide; only BatchNorm's per-rank statistics differ."""
    args = [
        "fit",
        "--sources",
        str(photo_dir),
        "--stage-steps",
        "4,4,4",
        "--stage-crop",
        "64,64,64",
        "--workers",
        "0",
        "--val-every",
        "100",
        "--val-samples",
        "2",
        "--amp",
        "off",
        "--log-every",
        "1",
        "--lr",
        "0.003",
    ]
    single = tmp_path / "single"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "model_training.cli",
            *args,
            "--batch-size",
            "4",
            "--out",
            str(single),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    ddp = tmp_path / "ddp"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "model_training.cli",
            *args,
            "--batch-size",
            "2",
            "--out",
            str(ddp),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    curve = lambda p: np.array([json.loads(line)["total"] for line in (p / "metrics.jsonl").read_text().splitlines()])
    one, two = curve(single), curve(ddp)
    assert len(one) == len(two) == 12
    assert np.corrcoef(one, two)[0, 1] > 0.8, (one, two)
    assert np.abs(one - two).mean() < 0.1 * one.mean(), (one, two)


@pytest.mark.integration
def test_fine_tuning_starts_from_a_checkpoint_and_says_so(photo_dir, tmp_path):
    first = _tiny_cfg(tmp_path / "a", photo_dir, decoder_channels=(16, 16, 8, 8, 8))
    fit(first)
    start = torch.load(first.out / "best_model.pt", weights_only=False)
    tuned = _tiny_cfg(
        tmp_path / "b",
        photo_dir,
        decoder_channels=(16, 16, 8, 8, 8),
        init_from=first.out / "best_model.pt",
    )
    model = initial_model(tuned)
    assert model.config.encoder_init == "finetuned:best_model.pt<-random"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, start["model"][k])
    other = _tiny_cfg(
        tmp_path / "c",
        photo_dir,
        decoder_channels=(32, 16, 8, 8, 8),
        init_from=first.out / "best_model.pt",
    )
    with pytest.raises(ValueError, match="decoder"):
        initial_model(other)


@pytest.mark.integration
def test_a_data_seed_changes_the_samples_but_not_the_split(photo_dir, tmp_path):
    runs = {}
    for name, data_seed in (("default", None), ("new", 5)):
        cfg = _tiny_cfg(tmp_path / name, photo_dir, data_seed=data_seed)
        fit(cfg, stop_after=1)
        runs[name] = (
            (cfg.out / "splits.json").read_text(),
            torch.load(cfg.out / "train_state.pt", weights_only=False)["model"],
        )
    assert runs["default"][0] == runs["new"][0]
    before, after = runs["default"][1], runs["new"][1]
    moved = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert moved, "a new data seed trained on the very same samples"


def test_sources_are_balanced_by_the_square_root_of_their_folder():
    paths = [Path(f"/p/portraits/{i}.jpg") for i in range(100)] + [Path(f"/p/scenes/{i}.jpg") for i in range(25)]
    w = source_weights(paths, "sqrt_folder")
    share = sum(w[:100]) / sum(w)
    assert share == pytest.approx(10 / 15)  # sqrt(100) : sqrt(25)
    assert source_weights(paths, "uniform") is None


def test_auto_autocast_is_bf16_only_where_the_cpu_has_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_amp("auto", cpu) == "off"
    assert resolve_amp("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_amp("auto", cpu) == "bf16"
