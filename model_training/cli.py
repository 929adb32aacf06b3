"""`qc-train`: make training data (and, in later releases, train and evaluate the detector)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

from model_training.data import DEFAULT_MASK_SOURCES, BlurSynthDataset, list_sources, split_sources
from model_training.dataset_writer import default_workers, write_dataset
from model_training.synth.config import SynthConfig
from model_training.synth.masks import MaskSourceError, build_mask_sources

app = typer.Typer(help="Artwork QC training tools: synthesise motion-blur datasets.", no_args_is_help=True)
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
    split: Annotated[str, typer.Option("--split", help="Sources to use: all, train or val (seeded split by source image).")] = "all",
    stage: Annotated[Optional[int], typer.Option("--stage", min=1, max=3, help="Curriculum stage 1-3 (overrides the config).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="JSON synthesis recipe (see SynthConfig).")] = None,
    mask_sources: Annotated[str, typer.Option("--mask-sources", help="Comma-separated mask sources.")] = ",".join(DEFAULT_MASK_SOURCES),
    segmenter_weights: Annotated[Optional[Path], typer.Option("--segmenter-weights", help="TorchScript segmenter file (mask source 'torchscript').")] = None,
    sam_weights: Annotated[Optional[Path], typer.Option("--sam-weights", help="Segment Anything checkpoint (mask source 'sam').")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache instance masks here across runs.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = default_workers(),
) -> None:
    """Synthesise COUNT motion-blur samples from the photos in SOURCES into OUT."""
    if split not in ("all", "train", "val"):
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
    chosen = {"all": paths, "train": train, "val": val}[split]
    if not chosen:
        console.print(f"[red]error:[/red] no usable source images in {', '.join(map(str, sources))}")
        raise typer.Exit(2)
    dataset = BlurSynthDataset(
        chosen, cfg, length=count, seed=seed, mask_sources=names, cache_dir=cache_dir
    )
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
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("synthesising", total=count)
        summary = write_dataset(
            dataset, out, workers=workers, recipe=recipe, progress=lambda n: bar.advance(task, n)
        )
    console.print(
        f"wrote {summary.count} samples from {len(chosen)} source images "
        f"({summary.blurred} with motion blur, {summary.negatives} hard negatives) to {out}\n"
        f"contact sheet: {summary.contact_sheet}"
    )
