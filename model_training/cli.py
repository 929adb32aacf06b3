"""`qc-train`: make training data (and, in later releases, train and evaluate the detector)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from model_training.data import DEFAULT_MASK_SOURCES, BlurSynthDataset, list_sources, split_sources
from model_training.dataset_writer import default_workers, write_dataset
from model_training.synth.config import SynthConfig
from model_training.synth.masks import MaskSourceError, build_mask_sources

if TYPE_CHECKING:
    from model_training.train import TrainConfig

app = typer.Typer(
    help="Artwork QC training tools: synthesise motion-blur data, fit, evaluate, calibrate and export the detector.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console(stderr=True)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


@app.command()
def synth(
    sources: Annotated[list[Path], typer.Option("--sources", help="Folder (or file) of sharp photos; repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    count: Annotated[int, typer.Option("--count", min=1, help="Number of samples to write.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same dataset.")] = 0,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Sources to use: all, train or val (seeded split by source image); "
            "with --split-file any key of that file, e.g. test.",
        ),
    ] = "all",
    split_file: Annotated[
        Path | None,
        typer.Option(
            "--split-file",
            help="A training run's splits.json: take the --split list from it "
            "(so a test set uses only held-out sources).",
        ),
    ] = None,
    stage: Annotated[
        int | None,
        typer.Option("--stage", min=1, max=3, help="Curriculum stage 1-3 (overrides the config)."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON synthesis recipe (see SynthConfig).")] = None,
    mask_sources: Annotated[str, typer.Option("--mask-sources", help="Comma-separated mask sources.")] = ",".join(
        DEFAULT_MASK_SOURCES
    ),
    segmenter_weights: Annotated[
        Path | None,
        typer.Option("--segmenter-weights", help="TorchScript segmenter file (mask source 'torchscript')."),
    ] = None,
    sam_weights: Annotated[
        Path | None,
        typer.Option("--sam-weights", help="Segment Anything checkpoint (mask source 'sam')."),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Cache instance masks here across runs.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = default_workers(),
) -> None:
    """Synthesise COUNT motion-blur samples from the photos in SOURCES into OUT."""
    if split_file is None and split not in ("all", "train", "val"):
        raise typer.BadParameter("must be all, train or val", param_hint="--split")
    try:
        cfg = SynthConfig.load(config)
        if stage is not None:
            cfg = cfg.model_copy(update={"stage": stage})
        names = [n.strip() for n in mask_sources.split(",") if n.strip()]
        build_mask_sources(names, segmenter_weights=segmenter_weights, sam_weights=sam_weights)
    except (ValueError, MaskSourceError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    paths = []
    for src in sources:
        try:
            paths += list_sources(src)
        except FileNotFoundError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    train, val = split_sources(paths, cfg.val_fraction, seed)
    chosen = {"all": paths, "train": train, "val": val}.get(split, [])
    if split_file is not None:
        try:
            listed = {str(p) for p in json.loads(split_file.read_text())[split]}
        except (OSError, ValueError, KeyError) as exc:
            console.print(f"[red]error:[/red] cannot read split {split!r} from {split_file}: {exc}")
            raise typer.Exit(2) from exc
        chosen = [p for p in paths if str(p) in listed]
    if not chosen:
        console.print(f"[red]error:[/red] no usable source images in {', '.join(map(str, sources))}")
        raise typer.Exit(2)
    dataset = BlurSynthDataset(chosen, cfg, length=count, seed=seed, mask_sources=names, cache_dir=cache_dir)
    recipe = {
        "seed": seed,
        "count": count,
        "split": split,
        "mask_sources": names,
        "config": cfg.model_dump(mode="json"),
        "sources": [str(p) for p in chosen],
        "train_sources": [str(p) for p in train],
        "val_sources": [str(p) for p in val],
    }
    with _progress() as bar:
        task = bar.add_task("synthesising", total=count)
        summary = write_dataset(dataset, out, workers=workers, recipe=recipe, progress=lambda n: bar.advance(task, n))
    console.print(
        f"wrote {summary.count} samples from {len(chosen)} source images "
        f"({summary.blurred} with motion blur, {summary.negatives} hard negatives) to {out}\n"
        f"contact sheet: {summary.contact_sheet}"
    )


def _progress(**options) -> Progress:
    """The one progress bar of every long command: what, bar, n of total, elapsed, remaining."""
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, **options)


def _parse_ints(text: str, name: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise typer.BadParameter("give comma-separated positive whole numbers", param_hint=name)
    return tuple(int(p) for p in parts)


def _parse_triple(text: str, name: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter("give three comma-separated whole numbers, one per curriculum stage", param_hint=name)
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _fit_config(config: Path | None, out: Path, sources: list[Path], given: dict) -> TrainConfig:
    """The run's TrainConfig: the file's values, then only the options typed on the command line.

    Every fit option defaults to None so that an option left out cannot silently replace
    what the config file says with the command line's default.
    """
    from model_training.train import TrainConfig

    base = json.loads(config.read_text()) if config else {}
    typed = {k: v for k, v in given.items() if v is not None}
    return TrainConfig.model_validate({**base, "out": out, "sources": sources, **typed})


@app.command()
def fit(
    sources: Annotated[
        list[Path],
        typer.Option(
            "--sources",
            help="Folder of sharp photos; repeatable. Split by source image into train/val/test.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Run folder: checkpoints, metrics.jsonl, curves.png, splits.json."),
    ],
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Encoder: mobilenet_v2 (default, fast on a CPU), efficientnet-lite0 (CPU-made, ImageNet weights "
            "packaged too), resnet50 (paper), resnet34, resnet18, efficientnet-b0."
        ),
    ] = None,
    encoder_weights: Annotated[
        str | None,
        typer.Option(
            help="ImageNet weights: 'imagenet' (the packaged file, `make train-weights`), a local file, "
            "or 'none' for random init. Never downloaded."
        ),
    ] = None,
    decoder_channels: Annotated[
        str | None,
        typer.Option(help="Decoder widths, deepest first (default 64,32,24,16,8; the paper: 256,128,64,32,16)."),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Fine-tune from this checkpoint (.pt or shipped .safetensors) instead of ImageNet/random weights."
        ),
    ] = None,
    stage_steps: Annotated[
        str | None, typer.Option(help="Steps of curriculum stages 1,2,3 (default 300,700,1500).")
    ] = None,
    stage_crop: Annotated[str | None, typer.Option(help="Crop side of stages 1,2,3 (default 192,256,256).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per-process batch size (default 8).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak AdamW learning rate (default 1e-3).")] = None,
    amp: Annotated[
        str | None,
        typer.Option(
            help="Autocast: auto (bf16 on GPUs and CPUs with bf16 instructions, else off), bf16, fp16 (CUDA) "
            "or off (default auto)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="DataLoader worker processes per training process (default 1)."),
    ] = None,
    val_every: Annotated[int | None, typer.Option(min=1, help="Validate every N steps (default 250).")] = None,
    val_samples: Annotated[int | None, typer.Option(min=1, help="Validation samples (default 64).")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of splits, synthesis and initialisation (default 0)."),
    ] = None,
    data_seed: Annotated[
        int | None,
        typer.Option(help="Seed of the training samples only (default: --seed); the split stays --seed's."),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="Validate and snapshot an exponential moving average of the weights with this "
            "decay per step, e.g. 0.998 (default: no average).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON TrainConfig; the options above override it where given on the command line.",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/train_state.pt if present.")] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(min=1, help="End at this global step (resumable) without changing the schedule."),
    ] = None,
    log_every: Annotated[int | None, typer.Option(min=1, help="Log every N steps (default 10).")] = None,
    snapshot_every: Annotated[
        int | None,
        typer.Option(min=1, help="Keep the model every N steps in OUT/snapshots/ (candidates for calibrate)."),
    ] = None,
) -> None:
    """Train the detector on motion blur synthesised on the fly (three-stage curriculum)."""
    from model_training.train import fit as run_fit

    try:
        cfg = _fit_config(
            config,
            out,
            sources,
            {
                "encoder": encoder,
                "encoder_weights": encoder_weights,
                "init_from": init_from,
                "decoder_channels": decoder_channels and _parse_ints(decoder_channels, "--decoder-channels"),
                "stage_steps": stage_steps and _parse_triple(stage_steps, "--stage-steps"),
                "stage_crop": stage_crop and _parse_triple(stage_crop, "--stage-crop"),
                "batch_size": batch_size,
                "lr": lr,
                "amp": amp,
                "workers": workers,
                "val_every": val_every,
                "val_samples": val_samples,
                "seed": seed,
                "data_seed": data_seed,
                "ema_decay": ema_decay,
                "log_every": log_every,
                "snapshot_every": snapshot_every,
            },
        )
        if cfg.encoder_weights not in (None, "none") and cfg.init_from is None:
            # Refuse a missing, corrupt or mismatched weights file before any work starts.
            from qc_worker.detector.model import ModelConfig, build_model

            build_model(
                ModelConfig(encoder=cfg.encoder, decoder_channels=cfg.decoder_channels),
                cfg.encoder_weights,
            )
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with _progress(disable=not console.is_terminal and not sys.stderr.isatty()) as bar:
        task = bar.add_task("training", total=cfg.total_steps)

        def on_step(step: int, record: dict) -> None:
            desc = f"stage {record.get('stage', 1)} loss {record.get('total', float('nan')):.3f}"
            if "val_blur_iou" in record:
                desc += f" val IoU {record['val_blur_iou']:.3f} AUC {record['val_auc']:.3f}"
            bar.update(task, completed=step, description=desc)
            if step % 50 == 0 and not console.is_terminal:
                console.print(f"step {step}/{cfg.total_steps} {desc}")

        last = run_fit(cfg, resume=resume, stop_after=stop_after, progress=on_step)
    console.print(f"done: {json.dumps(last)}\noutputs in {out}")


@app.command()
def evaluate(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="best_model.pt / train_state.pt of a run, or a shipped .safetensors.",
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Test folder (CUHK image/+gt/, synthetic images/+masks/, flat NAME+NAME_mask, or sharp/+blur/).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for results.json, results.md, PR/ROC plots and the worst-case sheet.",
        ),
    ],
    val: Annotated[
        Path | None,
        typer.Option(
            "--val",
            help="Validation folder for the threshold search; without it a seeded share of --data is used.",
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(min=0.05, max=0.9, help="Share of --data for threshold search when --val is absent."),
    ] = 0.3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Evaluate the model and both classical baselines, each with its own grid-searched threshold."""
    import torch

    from model_training.evaluate import (
        discover,
        markdown_tables,
        split_items,
        write_report,
    )
    from model_training.evaluate import (
        evaluate as run_eval,
    )
    from model_training.export import load_served_model
    from qc_worker.detector.checkpoint import CheckpointError

    try:
        model = load_served_model(checkpoint)
        layout, items = discover(data)
        if val is not None:
            _, val_items = discover(val)
            test_items = items
        else:
            test_items, val_items = split_items(items, val_fraction, seed)
    except (OSError, ValueError, CheckpointError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"{layout} layout: {len(val_items)} validation, {len(test_items)} test images")
    with _progress() as bar:
        task = bar.add_task("evaluating", total=len(val_items) + len(test_items))
        results, test, labels, used = run_eval(
            model,
            val_items,
            test_items,
            torch.device("cpu"),
            progress=lambda n: bar.advance(task, n),
        )
    results["layout"] = layout
    results["checkpoint"] = str(checkpoint)
    write_report(results, test, labels, used, out)
    print(markdown_tables(results))
    console.print(f"results in {out}")


@app.command()
def calibrate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Shipped-format .safetensors (qc-train export).")],
    realdev: Annotated[Path, typer.Option("--realdev", help="realdev folder: levin/{blur,sharp}, blur_only/*.")],
    splits: Annotated[
        Path,
        typer.Option(
            "--splits",
            help="The run's splits.json: its val and test photos are screened unblurred.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for calibration.json and calibration.md.")],
    frozen: Annotated[
        bool,
        typer.Option(
            "--frozen",
            help="Report at the checkpoint's own pixel and frame thresholds instead of choosing them.",
        ),
    ] = False,
    pixel_range: Annotated[
        str | None,
        typer.Option(
            "--pixel-range",
            help="LOW,HIGH: choose the pixel threshold only in this window (0,1: anywhere). Default: "
            "--pixel-window either side of the blur-IoU threshold the checkpoint carries (qc-train "
            "export --results), so that the blur map still localises.",
        ),
    ] = None,
    pixel_window: Annotated[
        float,
        typer.Option(
            "--pixel-window",
            min=0.0,
            max=1.0,
            help="Half-width of the default window around the checkpoint's blur-IoU threshold.",
        ),
    ] = 0.1,
    frame_scales: Annotated[
        str | None,
        typer.Option(
            "--frame-scales",
            help="Sizes the whole-frame rule reads its median at, e.g. 1,0.5 (1 included, each in (0, 1]); "
            "calibrated with the thresholds and exported with them. Default: the checkpoint's own.",
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="auto (as `qc screen` serves on this CPU: bf16 where it has bf16 instructions), fp32 or bf16: "
            "how verdicts move on CPUs that serve the other way.",
        ),
    ] = "auto",
) -> None:
    """Screen real blur and unblurred photos as `qc screen` does; choose the pixel and frame thresholds."""
    from model_training.calibrate import calibrate as run_calibrate
    from model_training.calibrate import (
        markdown,
        photo_items,
        pixel_candidates,
        realdev_items,
        score_items,
        window_around,
    )
    from qc_worker.config import Settings
    from qc_worker.detector.checkpoint import CheckpointError
    from qc_worker.detector.inference import Detector, InferenceConfig
    from qc_worker.detector.scales import parse_frame_scales

    settings = Settings(_env_file=None, device="cpu")
    window = None
    if pixel_range is not None:
        try:
            low, high = (float(v) for v in pixel_range.split(","))
        except ValueError:
            console.print(f"[red]error:[/red] --pixel-range {pixel_range!r}: give LOW,HIGH, e.g. 0.5,0.7")
            raise typer.Exit(2) from None
        window = (low, high)
    try:
        scales = parse_frame_scales(frame_scales) if frame_scales is not None else None
        config = InferenceConfig(frame_scales=scales)
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--precision {precision!r}: give auto, fp32 or bf16")
        detector = Detector.load(checkpoint, device="cpu", precision=precision, config=config)
        items = realdev_items(realdev) + photo_items(splits)
    except (OSError, ValueError, KeyError, CheckpointError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if window is None and not frozen:
        iou_threshold = detector.thresholds.get("pixel_iou")
        if iou_threshold is None:
            console.print(
                "[yellow]warning:[/yellow] the checkpoint carries no blur-IoU threshold (export it with "
                "--results of qc-train evaluate, or give --pixel-range): the pixel threshold is chosen "
                "anywhere, where the blur map may no longer localise"
            )
        else:
            window = window_around(iou_threshold, pixel_window)
            console.print(
                f"pixel threshold chosen in {window[0]:.3f}..{window[1]:.3f} "
                f"(blur-IoU threshold {iou_threshold:g} +- {pixel_window:g})"
            )
    try:
        pixel_candidates(window)  # before the screening, which takes minutes
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with _progress() as bar:
        task = bar.add_task("screening", total=len(items))
        scored = score_items(detector, items, settings, progress=lambda n: bar.advance(task, n))
    result = run_calibrate(
        scored,
        settings,
        frozen=detector.pixel_threshold if frozen else None,
        frozen_frame=detector.frame_threshold,
        pixel_range=window,
    )
    result["checkpoint"] = str(checkpoint)
    result["frame_scales"] = list(detector.frame_scales)
    result["precision"] = "fp32" if detector.dtype is None else str(detector.dtype).removeprefix("torch.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(result, indent=2))
    (out / "calibration.md").write_text(markdown(result))
    print(markdown(result))
    console.print(f"results in {out}")


@app.command()
def export(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="best_model.pt or train_state.pt of a run, or a shipped .safetensors to re-export "
            "(e.g. with a new calibration).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The shipped .safetensors file to write.")],
    results: Annotated[
        Path | None,
        typer.Option("--results", help="results.json of qc-train evaluate: thresholds and metrics to embed."),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option("--run", help="Run folder (defaults to the checkpoint's folder)."),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="calibration.json of qc-train calibrate: its pixel and frame thresholds and real-image results "
            "are embedded.",
        ),
    ] = None,
) -> None:
    """Convert a training checkpoint into the shipped fp16 safetensors format (or re-export a shipped one)."""
    from model_training.export import export as run_export

    try:
        meta = run_export(checkpoint, out, results=results, run=run, calibration=calibration)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    size = out.stat().st_size / 1e6
    console.print(
        f"wrote {out} ({size:.1f} MB, {meta.dtype}, checksum {meta.checksum[:12]}), thresholds {meta.thresholds}"
    )


if __name__ == "__main__":
    app()
