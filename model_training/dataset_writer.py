"""Writes a synthetic dataset to disk, in parallel, with a contact sheet for a person to check.

Layout under the output folder::

    images/NNNNNN.png      the sample (8-bit RGB, lossless)
    masks/NNNNNN.png       255 where motion blur was applied
    intensity/NNNNNN.png   blur intensity x 255 (0 outside the mask)
    observable/NNNNNN.png  255 where blur is observable (textured in the sharp source)
    samples.jsonl          one JSON object per sample: every parameter drawn
    dataset.json           the recipe, seed and sources (train/val split included)
    contact_sheet.png      a few samples beside their masks and intensity maps
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model_training.data import BlurSynthDataset, Sample

log = logging.getLogger(__name__)

_worker_dataset: BlurSynthDataset | None = None
_worker_out: Path | None = None


@dataclass
class WriteSummary:
    out: Path
    count: int
    blurred: int
    negatives: int
    contact_sheet: Path


def _init_worker(dataset: BlurSynthDataset, out: Path) -> None:
    global _worker_dataset, _worker_out
    cv2.setNumThreads(1)
    _worker_dataset, _worker_out = dataset, out


def _write_one(index: int) -> dict:
    assert _worker_dataset is not None and _worker_out is not None
    sample = _worker_dataset.sample(index)
    write_sample(_worker_out, index, sample)
    return sample.params | {"blur_fraction": round(float((sample.mask > 0).mean()), 5)}


def write_sample(out: Path, index: int, sample: Sample) -> None:
    name = f"{index:06d}.png"
    _imwrite(out / "images" / name, sample.image[..., ::-1])
    _imwrite(out / "masks" / name, sample.mask)
    _imwrite(out / "intensity" / name, np.round(sample.intensity * 255).astype(np.uint8))
    _imwrite(out / "observable" / name, sample.observable)


def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def write_dataset(
    dataset: BlurSynthDataset,
    out: Path,
    *,
    workers: int = 1,
    recipe: dict | None = None,
    sheet_count: int = 8,
    progress: Callable[[int], None] | None = None,
) -> WriteSummary:
    """Write every sample of ``dataset`` under ``out`` and return what was made.

    Samples are made in worker processes (each builds its own mask detectors) and
    written there; only their parameters come back, in index order, so
    ``samples.jsonl`` lines up with the file names whatever the worker count.
    """
    for sub in ("images", "masks", "intensity", "observable"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").write_text(json.dumps(recipe or {}, indent=2, default=str))
    blurred = negatives = 0
    with open(out / "samples.jsonl", "w") as jsonl:
        for params in _generate(dataset, out, workers):
            jsonl.write(json.dumps(params) + "\n")
            blurred += params["blur_fraction"] > 0
            negatives += params.get("mode") == "negative"
            if progress:
                progress(1)
    sheet = out / "contact_sheet.png"
    write_contact_sheet(out, range(min(sheet_count, len(dataset))), sheet)
    return WriteSummary(out, len(dataset), blurred, negatives, sheet)


def _generate(dataset: BlurSynthDataset, out: Path, workers: int) -> Iterator[dict]:
    indices = range(len(dataset))
    if workers <= 1:
        _init_worker(dataset, out)
        yield from map(_write_one, indices)
        return
    # spawn, not fork: a child forked after OpenCV has started its thread pool can
    # deadlock on its first parallel call.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(dataset, out)) as pool:
        yield from pool.map(_write_one, indices, chunksize=4)


def write_contact_sheet(out: Path, indices: range, path: Path, tile: int = 192) -> None:
    """One row per sample: the image, the image with the mask tinted red, the intensity map."""
    rows = []
    for i in indices:
        name = f"{i:06d}.png"
        img = cv2.imread(str(out / "images" / name))
        mask = cv2.imread(str(out / "masks" / name), cv2.IMREAD_GRAYSCALE)
        inten = cv2.imread(str(out / "intensity" / name), cv2.IMREAD_GRAYSCALE)
        if img is None or mask is None or inten is None:
            continue
        tint = img.copy()
        sel = mask > 0
        tint[sel] = (0.5 * tint[sel] + 0.5 * np.array([0, 0, 255])).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tint, contours, -1, (0, 255, 255), 1)
        # Viridis keeps low intensities visible; black marks "not motion-blurred".
        heat = cv2.applyColorMap(inten, cv2.COLORMAP_VIRIDIS)
        heat[~sel] = 0
        row = [cv2.resize(x, (tile, tile), interpolation=cv2.INTER_AREA) for x in (img, tint, heat)]
        rows.append(np.concatenate(row, axis=1))
    if rows:
        _imwrite(path, np.concatenate(rows, axis=0))


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
