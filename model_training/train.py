"""`qc-train fit`: AdamW, gradient clipping, optional AMP, DDP, the three-stage curriculum.

Data are synthesised on the fly from (seed, stage, global step, rank), so a run is
reproducible, resuming continues with exactly the samples it would have seen, and every
DDP rank draws different samples without a sampler to coordinate. Launch on several
processes with ``torchrun --nproc_per_node=N -m model_training.cli fit ...`` (gloo on CPU,
NCCL on GPUs).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from model_training.data import BlurSynthDataset, list_sources, split_sources
from model_training.losses import CompositeLoss, LossConfig
from model_training.metrics import PixelHistogram, image_score, pixel_metrics, roc_auc
from model_training.synth.config import SynthConfig
from qc_worker.detector.inference import pick_dtype
from qc_worker.detector.model import BlurDetector, ModelConfig, build_model

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
BEST_FILE = "best_model.pt"
METRICS_FILE = "metrics.jsonl"
SPLITS_FILE = "splits.json"
SNAPSHOT_DIR = "snapshots"


class TrainConfig(BaseModel):
    """A training run; saved as ``train_config.json`` beside its outputs."""

    model_config = ConfigDict(extra="forbid")

    out: Path
    sources: list[Path]
    encoder: str = "mobilenet_v2"
    #: A weights file, "imagenet" (the packaged file, see qc_worker.detector.pretrained),
    #: "none" (random initialisation on purpose) or None (torch hub cache, else random).
    encoder_weights: str | None = None
    #: Decoder widths, deepest first. The slim default keeps serving on a CPU fast; the
    #: paper's 256-128-64-32-16 suits a ResNet-50 on a GPU.
    decoder_channels: tuple[int, ...] = (64, 32, 24, 16, 8)
    #: Fine-tune: start from this checkpoint's weights (training .pt or shipped
    #: .safetensors; same architecture) instead of ImageNet or random weights.
    init_from: Path | None = None
    seed: int = 0
    #: Seed of the synthesised training stream (None: ``seed``). A fine-tune sets its own so
    #: it learns from samples the run it continues never drew, while ``seed`` keeps the split,
    #: and so the held-out photos, what they were.
    data_seed: int | None = None
    batch_size: int = Field(8, ge=1)
    #: Steps of curriculum stages 1, 2, 3 (paper 3.5).
    stage_steps: tuple[int, int, int] = (300, 700, 1500)
    #: Crop side per stage: smaller crops early make the first stage cheap.
    stage_crop: tuple[int, int, int] = (192, 256, 256)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    #: Keep an exponential moving average of the weights (and BatchNorm statistics) with
    #: this decay per step, and validate, snapshot and keep as best that average instead of
    #: the raw weights (None: no average). Neighbouring raw snapshots of a CPU-length run
    #: differ on real blur by more than the gains being chosen between; the average of the
    #: last few hundred steps is a steadier candidate.
    ema_decay: float | None = Field(None, gt=0, lt=1)
    #: Autocast. "auto": bf16 on GPUs and on CPUs with bf16 instructions, else off (see
    #: qc_worker.detector.inference.cpu_has_fast_bf16: bf16 is ~10x slower on AVX2 only).
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    workers: int = Field(1, ge=0)
    val_every: int = Field(250, ge=1)
    val_samples: int = Field(64, ge=1)
    val_crop: int = Field(256, ge=32)
    checkpoint_every: int = Field(100, ge=1)
    #: Keep the model of every N-th step as ``snapshots/step_NNNNNN.pt`` (None: keep none).
    #: The best validation IoU on synthetic blur is not the best model on real blur, so a
    #: run keeps candidates for ``qc-train calibrate`` to choose among on realdev.
    snapshot_every: int | None = Field(None, ge=1)
    log_every: int = Field(10, ge=1)
    val_fraction: float = Field(0.08, ge=0, lt=1)
    test_fraction: float = Field(0.12, ge=0, lt=1)
    #: Cap on sources per folder so one large folder (e.g. 800 portraits) cannot dominate.
    max_sources_per_folder: int | None = 250
    #: How often each training source is drawn: "uniform" (every source alike, so the
    #: largest folder dominates) or "sqrt_folder" (a folder's share grows with the square
    #: root of its size: 196 portraits no longer make two thirds of the samples).
    source_balance: Literal["uniform", "sqrt_folder"] = "sqrt_folder"
    mask_sources: tuple[str, ...] = ("foreground", "faces", "skin_hair")
    synth: SynthConfig = SynthConfig()
    loss: LossConfig = LossConfig()

    @property
    def total_steps(self) -> int:
        return sum(self.stage_steps)


@dataclass
class Splits:
    train: list[Path]
    val: list[Path]
    test: list[Path]

    def to_dict(self) -> dict:
        return {k: [str(p) for p in getattr(self, k)] for k in ("train", "val", "test")}


def make_splits(cfg: TrainConfig) -> Splits:
    """Split *source images* three ways (train / val / held-out test), seeded, per folder capped."""
    paths: list[Path] = []
    for src in cfg.sources:
        paths += list_sources(src)
    if cfg.max_sources_per_folder:
        by_folder: dict[Path, list[Path]] = defaultdict(list)
        for p in paths:
            by_folder[p.parent].append(p)
        paths = []
        for folder in sorted(by_folder):
            group = sorted(by_folder[folder])
            random.Random(cfg.seed).shuffle(group)
            paths += group[: cfg.max_sources_per_folder]
    rest, test = split_sources(paths, cfg.test_fraction, cfg.seed)
    val_share = cfg.val_fraction / max(1 - cfg.test_fraction, 1e-9)
    train, val = split_sources(rest, val_share, cfg.seed + 1)
    if not train:
        raise ValueError("no usable training source images")
    return Splits(train, val, test)


def source_weights(paths: Sequence[Path], balance: str) -> list[float] | None:
    """Per-source draw weights for :class:`BlurSynthDataset` (None: uniform)."""
    if balance == "uniform":
        return None
    counts: dict[Path, int] = defaultdict(int)
    for p in paths:
        counts[p.parent] += 1
    # Folder share ~ sqrt(n): each of its n sources gets sqrt(n) / n.
    return [1.0 / math.sqrt(counts[p.parent]) for p in paths]


def stage_synth(cfg: TrainConfig, stage: int, crop: int) -> SynthConfig:
    sampling = cfg.synth.sampling.model_copy(update={"out_size": crop})
    return cfg.synth.model_copy(update={"stage": stage, "sampling": sampling})


class _Dist:
    """Rank and world size, from torchrun's environment when launched by it."""

    def __init__(self) -> None:
        self.enabled = dist.is_torchelastic_launched()
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast a run uses on ``device``: ``auto`` becomes bf16 where it is fast, else off."""
    if amp != "auto":
        return amp
    return "bf16" if pick_dtype(device, "auto") is not None else "off"


def _autocast(amp: str, device: torch.device):
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(cfg.warmup_steps, 1)
        progress = (step - cfg.warmup_steps) / max(cfg.total_steps - cfg.warmup_steps, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


class _StepIndices(torch.utils.data.Sampler[int]):
    """Dataset indices for steps ``start..steps`` of one rank: (step * world + rank) * batch + j."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __iter__(self):
        for s in range(self.start, self.steps):
            base = (s * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return max(self.steps - self.start, 0) * self.batch


def _to(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, ...]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    image = batch["image"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    return (
        image,
        batch["mask"].to(device),
        batch["intensity"].to(device),
        batch["observable"].to(device),
    )


@torch.no_grad()
def validate(
    model: BlurDetector,
    batches: Sequence[dict],
    loss_fn: CompositeLoss,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Loss, blur IoU / F1 at 0.5 and image-level ROC AUC on the fixed validation set."""
    was_training = model.training
    model.eval()
    hist = PixelHistogram()
    losses, scores, labels = [], [], []
    for batch in batches:
        image, mask, inten, valid = _to(batch, device, cfg.channels_last)
        with _autocast(cfg.amp, device):
            out = model(image, with_aux=False)
        out.logits, out.intensity = out.logits.float(), out.intensity.float()
        losses.append(loss_fn(out, mask, inten, valid)[1]["total"])
        prob = out.probability.cpu().numpy()
        truth = mask.cpu().numpy()
        obs = valid.cpu().numpy()
        hist.add(prob, truth, obs)
        scores += [image_score(p, valid=v) for p, v in zip(prob, obs, strict=True)]
        labels += [bool(t.any()) for t in truth]
    model.train(was_training)
    m = pixel_metrics(*hist.counts_at(0.5))
    return {
        "val_loss": float(np.mean(losses)),
        "val_blur_iou": m["blur_iou"],
        "val_blur_f1": m["blur_f1"],
        "val_auc": roc_auc(np.array(scores), np.array(labels)),
    }


def _val_batches(cfg: TrainConfig, splits: Splits) -> list[dict]:
    sources = splits.val or splits.train
    synth = stage_synth(cfg, 3, cfg.val_crop)
    ds = BlurSynthDataset(
        sources,
        synth,
        length=cfg.val_samples,
        seed=cfg.seed + 7919,
        mask_sources=cfg.mask_sources,
        cache_dir=cfg.out / "mask-cache",
    )
    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=0)
    return list(loader)


def initial_model(cfg: TrainConfig) -> BlurDetector:
    """ImageNet/random start, or the weights of ``init_from`` (fine-tuning, recorded as such)."""
    config = ModelConfig(encoder=cfg.encoder, decoder_channels=tuple(cfg.decoder_channels))
    if cfg.init_from is None:
        return build_model(config, cfg.encoder_weights)
    from model_training.export import load_training_model

    start = load_training_model(cfg.init_from)
    if (start.config.encoder, start.config.decoder_channels) != (
        config.encoder,
        config.decoder_channels,
    ):
        raise ValueError(
            f"--init-from {cfg.init_from} is a {start.config.encoder} U-Net with decoder "
            f"{list(start.config.decoder_channels)}; "
            f"this run asks for {cfg.encoder} with {list(config.decoder_channels)}"
        )
    start.config = replace(start.config, encoder_init=f"finetuned:{cfg.init_from.name}<-{start.config.encoder_init}")
    log.info("fine-tuning from %s", cfg.init_from)
    return start


def _save_state(
    cfg: TrainConfig, model: BlurDetector, ema: AveragedModel | None, opt, sched, step: int, best: float
) -> None:
    tmp = cfg.out / (STATE_FILE + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "model_config": model.config.to_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "best": best,
            "train_config": json.loads(cfg.model_dump_json()),
        },
        tmp,
    )
    tmp.replace(cfg.out / STATE_FILE)


def _save_model(path: Path, model: BlurDetector, step: int, metrics: dict) -> None:
    """Weights and definition only (no optimiser): what export, evaluate and --init-from read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "step": step,
            "metrics": metrics,
        },
        tmp,
    )
    tmp.replace(path)


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train; returns the last logged record. ``stop_after`` ends the run early at that
    global step (state saved, resumable) without changing the schedule. Writes under ``cfg.out``:

    ``train_state.pt`` (resumable, every ``checkpoint_every`` steps), ``best_model.pt``
    (best validation blur IoU), ``snapshots/`` (when ``snapshot_every`` is set; with
    ``ema_decay``, these two hold the averaged weights),
    ``metrics.jsonl``, ``curves.png``, ``splits.json``, ``train_config.json``.
    """
    d = _Dist()
    torch.manual_seed(cfg.seed)
    device = torch.device(f"cuda:{d.rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    # Recorded resolved, so train_config.json says which arithmetic the run really used.
    cfg = cfg.model_copy(update={"amp": resolve_amp(cfg.amp, device)})
    log.info("autocast: %s on %s", cfg.amp, device)
    cfg.out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(cfg)
    if d.main:
        (cfg.out / SPLITS_FILE).write_text(json.dumps(splits.to_dict(), indent=1))
        (cfg.out / "train_config.json").write_text(cfg.model_dump_json(indent=2))

    model = initial_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay is not None
        else None
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    step, best = 0, -1.0
    state_path = cfg.out / STATE_FILE
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        if ema is not None:
            if state.get("ema") is None:
                raise ValueError(f"{state_path} kept no weight average; resume without --ema-decay")
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, best = int(state["step"]), float(state["best"])
        log.info("resumed from %s at step %d", state_path, step)
    net = DistributedDataParallel(model) if d.enabled else model
    loss_fn = CompositeLoss(cfg.loss)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")
    val_batches = _val_batches(cfg, splits) if d.main else []
    kept = ema.module if ema is not None else model
    metrics_file = open(cfg.out / METRICS_FILE, "a" if resume else "w")
    record: dict = {}
    running: dict[str, float] = defaultdict(float)
    n_running = 0
    t_start = time.perf_counter()
    try:
        stage_start = 0
        for stage, (steps, crop) in enumerate(zip(cfg.stage_steps, cfg.stage_crop, strict=True), start=1):
            if step >= stage_start + steps:
                stage_start += steps
                continue
            ds = BlurSynthDataset(
                splits.train,
                stage_synth(cfg, stage, crop),
                length=steps * cfg.batch_size * d.world,
                seed=(cfg.seed if cfg.data_seed is None else cfg.data_seed) * 1000 + stage,
                mask_sources=cfg.mask_sources,
                cache_dir=cfg.out / "mask-cache",
                source_weights=source_weights(splits.train, cfg.source_balance),
            )
            sampler = _StepIndices(step - stage_start, steps, cfg.batch_size, d.rank, d.world)
            loader = DataLoader(
                ds,
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.workers,
                multiprocessing_context="spawn" if cfg.workers > 0 else None,
                prefetch_factor=4 if cfg.workers > 0 else None,
                pin_memory=device.type == "cuda",
            )
            for batch in loader:
                image, mask, inten, valid = _to(batch, device, cfg.channels_last)
                with _autocast(cfg.amp, device):
                    out = net(image, with_aux=True)
                out.logits, out.intensity = out.logits.float(), out.intensity.float()
                out.aux = [a.float() for a in out.aux]
                loss, terms = loss_fn(out, mask, inten, valid)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                scaler.step(opt)
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                for k, v in terms.items():
                    running[k] += v
                n_running += 1
                validating = step % cfg.val_every == 0 or step == cfg.total_steps
                if validating or step % cfg.log_every == 0:
                    record = {
                        "step": step,
                        "stage": stage,
                        "lr": sched.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "elapsed_s": round(time.perf_counter() - t_start, 1),
                        **{k: d.mean(v / n_running) for k, v in running.items()},
                    }
                    running.clear()
                    n_running = 0
                    if validating:
                        if d.main:
                            record.update(validate(kept, val_batches, loss_fn, cfg, device))
                            if record["val_blur_iou"] > best:
                                best = record["val_blur_iou"]
                                _save_model(cfg.out / BEST_FILE, kept, step, record)
                        d.barrier()
                    if d.main:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                stopping = stop_after is not None and step >= stop_after
                if d.main and (step % cfg.checkpoint_every == 0 or step == cfg.total_steps or stopping):
                    _save_state(cfg, model, ema, opt, sched, step, best)
                if d.main and cfg.snapshot_every and step % cfg.snapshot_every == 0:
                    _save_model(cfg.out / SNAPSHOT_DIR / f"step_{step:06d}.pt", kept, step, record)
                if progress and d.main:
                    progress(step, record)
                if stopping:
                    break
            if stop_after is not None and step >= stop_after:
                break
            stage_start += steps
    finally:
        metrics_file.close()
        d.close()
    if d.main:
        plot_curves(cfg.out / METRICS_FILE, cfg.out / "curves.png")
    return record


def plot_curves(metrics_path: Path, png: Path) -> None:
    """Training loss terms and validation metrics against step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in rows]
    for key in ("total", "seg", "reg", "aux"):
        a.plot(steps, [r.get(key, np.nan) for r in rows], label=key)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_title("training loss")
    a.legend()
    val = [r for r in rows if "val_blur_iou" in r]
    for key in ("val_blur_iou", "val_blur_f1", "val_auc"):
        b.plot([r["step"] for r in val], [r[key] for r in val], marker="o", label=key)
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.set_title("validation")
    b.legend()
    for prev, cur in zip(rows, rows[1:], strict=False):
        if cur["stage"] != prev["stage"]:
            a.axvline(prev["step"], color="grey", lw=0.5)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
