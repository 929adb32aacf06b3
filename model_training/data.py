"""From a folder of sharp photos to training samples: sources, splits, views, curriculum, Dataset.

A sample is made on the fly from (seed, index) alone, so it is the same in any process
and any DataLoader worker, and a dataset of any length costs no disk. Mask extraction
(GrabCut, face detection) is the slow part; it depends only on the source image, so it
is computed once per source and cached in memory and, optionally, on disk.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from model_training.synth.camera import camera_motion
from model_training.synth.config import SynthConfig
from model_training.synth.degrade import portrait_bokeh, sample_degradations
from model_training.synth.generate import blur_instances, loguniform, soft_alpha
from model_training.synth.graphics import overlay_graphics, render_graphic
from model_training.synth.instances import Instance
from model_training.synth.look import maybe_look
from model_training.synth.masks import MaskSource, build_mask_sources, extract_instances
from qc_worker.detector.observable import observable_map
from qc_worker.images import ImageError, decode_image, image_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MIN_SOURCE_SIDE = 32
#: Refuse absurd sources (decompression bombs) before decoding them.
MAX_SOURCE_PIXELS = 64_000_000
DEFAULT_MASK_SOURCES = ("foreground", "faces", "skin_hair")


class SourceError(Exception):
    """A source image that cannot be used, with the reason."""


@dataclass
class Sample:
    """One training example: 8-bit RGB image, 0/255 motion-blur mask, intensity in [0, 1],
    and the 0/255 map of pixels where blur is observable (textured in the sharp source).

    The mask is blurred *and* observable; unobservable pixels are neither blurred nor sharp
    and the mask losses leave them out (:mod:`qc_worker.detector.observable`).
    """

    image: np.ndarray
    mask: np.ndarray
    intensity: np.ndarray
    observable: np.ndarray
    params: dict = field(default_factory=dict)


def list_sources(root: Path | str, *, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` whose header is readable and whose size is usable.

    Unusable files (zero bytes, not an image, too small, absurdly large) are skipped with
    the reason logged, so one bad file never stops a dataset from being made.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"source folder does not exist: {root}")
    pattern = "**/*" if recursive else "*"
    found = [root] if root.is_file() else sorted(p for p in root.glob(pattern) if p.is_file())
    usable = []
    for path in found:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            check_source_header(path)
        except SourceError as exc:
            log.warning("skipping source %s: %s", path, exc)
            continue
        usable.append(path)
    return usable


def check_source_header(path: Path) -> tuple[int, int]:
    """(width, height) of a usable source, or :class:`SourceError` saying why not."""
    try:
        w, h = image_size(path, MAX_SOURCE_PIXELS)
    except ImageError as exc:
        raise SourceError(str(exc)) from exc
    _check_side(w, h)
    return w, h


def _check_side(w: int, h: int) -> None:
    if min(w, h) < MIN_SOURCE_SIDE:
        raise SourceError(f"too small ({w}x{h}); need at least {MIN_SOURCE_SIDE} px a side")


def load_source(path: Path) -> np.ndarray:
    """Decode a source as upright 8-bit RGB, whatever its mode (the worker's own decoder).

    The decoder checks the header itself, so the file is opened once; only the size rule
    of :func:`check_source_header` is applied here, on the decoded array.
    """
    try:
        rgb = decode_image(path, MAX_SOURCE_PIXELS)
    except ImageError as exc:
        raise SourceError(str(exc)) from exc
    _check_side(rgb.shape[1], rgb.shape[0])
    return rgb


def split_sources(paths: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded train/validation split of *source images*: no source lands in both."""
    ordered = sorted(paths, key=lambda p: str(p))
    random.Random(seed).shuffle(ordered)
    n_val = int(round(len(ordered) * val_fraction))
    if val_fraction > 0 and len(ordered) > 1:
        n_val = max(1, n_val)
    return ordered[n_val:], ordered[:n_val]


class InstanceCache:
    """Instance masks per source, computed once, kept in memory and optionally on disk.

    The random-shape fallback is seeded from the source's name, so the instances of a
    source never depend on which sample asked first: the cache changes speed, not data.
    """

    def __init__(self, sources: Sequence[MaskSource], cache_dir: Path | None = None) -> None:
        self.sources = list(sources)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, list[Instance]] = {}

    def get(self, path: Path, image: np.ndarray) -> list[Instance]:
        key = self._key(path, image)
        if key in self._memory:
            return self._memory[key]
        instances = self._load(key)
        if instances is None:
            rng = np.random.default_rng(int(key[:12], 16))
            instances = extract_instances(image, self.sources, rng=rng)
            self._store(key, instances)
        self._memory[key] = instances
        return instances

    def _key(self, path: Path, image: np.ndarray) -> str:
        h = hashlib.sha1(path.name.encode())
        h.update(np.ascontiguousarray(image[::7, ::7]).tobytes())
        h.update(",".join(s.name for s in self.sources).encode())
        return h.hexdigest()

    def _load(self, key: str) -> list[Instance] | None:
        if self.cache_dir is None:
            return None
        f = self.cache_dir / f"{key}.npz"
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                masks = z["masks"]
                kinds = [str(k) for k in z["kinds"]]
                scores = z["scores"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable mask cache %s: %s", f, exc)
            return None
        return [Instance(m, k, float(s)) for m, k, s in zip(masks, kinds, scores, strict=True)]

    def _store(self, key: str, instances: list[Instance]) -> None:
        if self.cache_dir is None or not instances:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f"{key}.tmp.npz"
        np.savez_compressed(
            tmp,
            masks=np.stack([i.mask for i in instances]),
            kinds=np.array([i.kind for i in instances]),
            scores=np.array([i.score for i in instances], np.float32),
        )
        tmp.replace(self.cache_dir / f"{key}.npz")


def _resize_masks(instances: list[Instance], size: tuple[int, int]) -> list[Instance]:
    return [Instance(cv2.resize(i.mask, size, interpolation=cv2.INTER_NEAREST), i.kind, i.score) for i in instances]


def _crop_instances(instances: list[Instance], box: tuple[int, int, int, int], min_pixels: int) -> list[Instance]:
    x0, y0, x1, y1 = box
    out = []
    for inst in instances:
        m = inst.mask[y0:y1, x0:x1]
        if int(np.count_nonzero(m)) >= min_pixels:
            out.append(Instance(np.ascontiguousarray(m), inst.kind, inst.score))
    return out


def mask_centric_box(
    shape: tuple[int, int], instance: Instance, rng: np.random.Generator, cfg: SynthConfig
) -> tuple[int, int, int, int]:
    """A crop around one instance with random scale, aspect ratio and position (paper 3.1)."""
    h, w = shape
    x0, y0, x1, y1 = instance.bbox()
    side = max(x1 - x0, y1 - y0) * rng.uniform(*cfg.sampling.crop_scale)
    aspect = loguniform(rng, *cfg.sampling.crop_aspect)
    cw = int(min(w, max(16, side * math.sqrt(aspect))))
    ch = int(min(h, max(16, side / math.sqrt(aspect))))
    cx = (x0 + x1) / 2 + rng.uniform(-0.5, 0.5) * max(cw - (x1 - x0), 0)
    cy = (y0 + y1) / 2 + rng.uniform(-0.5, 0.5) * max(ch - (y1 - y0), 0)
    bx = int(np.clip(round(cx - cw / 2), 0, w - cw))
    by = int(np.clip(round(cy - ch / 2), 0, h - ch))
    return bx, by, bx + cw, by + ch


def _subject_matte(instances: list[Instance]) -> np.ndarray | None:
    """The soft matte of the main subject (the foreground instance), if the source has one."""
    for inst in instances:
        if inst.kind == "foreground" and inst.mask.any():
            return soft_alpha(inst.mask)
    return None


def synthesize(image: np.ndarray, instances: list[Instance], rng: np.random.Generator, cfg: SynthConfig) -> Sample:
    """One training sample from a sharp source and its instances.

    Order: choose mask- or image-centric view; scale it to a working resolution; maybe give
    the scene a look (haze, exposure, cast) that sharp and blurred samples share; decide
    hard negative, whole-frame camera motion, or which instances to blur; blur; optionally
    scale down after the blur; fit and crop to the output size; optionally degrade (JPEG,
    noise...) as delivery would. The intensity target is the blur extent *at the output
    resolution* over ``extent.max_px``, so a blur that was scaled down reads as milder, as
    it looks. Observability is read off the *sharp* working image, before any blur, and
    follows the label through every later resize and crop.
    """
    s = cfg.sampling
    h, w = image.shape[:2]
    params: dict = {}
    negative = bool(rng.random() < cfg.negatives.prob)
    mask_centric = bool(instances) and not negative and rng.random() < s.mask_centric_prob
    camera = not negative and not mask_centric and rng.random() < cfg.camera.prob
    params["mode"] = (
        "negative" if negative else "mask_centric" if mask_centric else "camera" if camera else "image_centric"
    )

    view, view_instances, target = image, instances, None
    if mask_centric:
        target = int(rng.integers(0, len(instances)))
        box = mask_centric_box((h, w), instances[target], rng, cfg)
        x0, y0, x1, y1 = box
        params["crop"] = list(box)
        view = image[y0:y1, x0:x1]
        kept = _crop_instances([instances[target]], box, 1)
        view_instances = kept

    vh, vw = view.shape[:2]
    # Image-centric views span the resolution range; a mask-centric view is already
    # scaled to its instance by the crop, so it is brought to about the output size
    # (the final crop must not cut its instance away).
    target = s.out_size * rng.uniform(1.0, 1.25) if mask_centric else loguniform(rng, *s.short_side)
    scale = min(target / min(vh, vw), s.max_upscale)
    size = (max(1, round(vw * scale)), max(1, round(vh * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    work = cv2.resize(view, size, interpolation=interp)
    work_instances = _resize_masks(view_instances, size)
    params["work_scale"] = round(scale, 4)
    work, look = maybe_look(work, rng, cfg.look)
    if look is not None:
        params["look"] = look
    observable = observable_map(work, cfg.observable)

    if camera:
        blurred = camera_motion(work, _subject_matte(work_instances), rng, cfg.camera, cfg.stage)
    else:
        if negative or (not mask_centric and rng.random() < s.no_blur_prob):
            chosen: list[Instance] = []
        elif mask_centric:
            chosen = work_instances
        else:
            k = int(rng.integers(1, min(s.max_blurred_instances, len(work_instances)) + 1)) if work_instances else 0
            order = rng.permutation(len(work_instances))[:k]
            chosen = [work_instances[i] for i in sorted(order)]
        # A mask-centric sample exists to teach its instance: never leave it sharp by chance.
        coverages = ["full" if rng.random() < 0.7 else "partial" for _ in chosen] if mask_centric else None
        blurred = blur_instances(work, chosen, rng, cfg, coverages=coverages)
    params.update(blurred.record)
    img, label, extent = blurred.image, blurred.label, blurred.extent_px

    if negative and rng.random() < cfg.negatives.bokeh_prob:
        subject = _subject_matte(work_instances)
        if subject is not None:
            img, params["bokeh"] = portrait_bokeh(img, subject, rng, cfg.negatives)

    maps = (label, extent, observable)
    if rng.random() < s.post_downscale_prob:
        f = float(rng.uniform(*s.post_downscale))
        img, maps = _rescale(img, maps, f)
        params["post_scale"] = round(f, 4)

    img, maps, box = _fit_and_crop(img, maps, s.out_size, rng)
    params["out_crop"] = list(box)
    label, extent, observable = maps

    positive = bool(label.any())
    degrade = negative or rng.random() < cfg.negatives.on_positive_prob
    if degrade:
        ops = sample_degradations(rng, cfg.negatives, names=cfg.negatives.on_positive if positive else None)
        for op in ops:
            img = op.apply(img)
        params["degradations"] = [op.to_dict() for op in ops]
    if rng.random() < s.grayscale_prob:
        img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        params["grayscale"] = True

    label = label & observable
    intensity = np.where(label, np.clip(extent / cfg.extent.max_px, 0.0, 1.0), 0.0).astype(np.float32)
    return Sample(img, label.astype(np.uint8) * 255, intensity, observable.astype(np.uint8) * 255, params)


Maps = tuple[np.ndarray, np.ndarray, np.ndarray]


def _rescale(img: np.ndarray, maps: Maps, f: float) -> tuple[np.ndarray, Maps]:
    """Resize the image and its (label, extent, observable) maps by ``f`` together."""
    label, extent, observable = maps
    h, w = img.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    img = cv2.resize(img, size, interpolation=interp)
    cover = cv2.resize(label.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    lab = cover >= 0.5
    # Extent is zero off the label, so dividing by the resized coverage averages it over
    # the labelled neighbours only: every labelled output pixel gets a real extent.
    ext = cv2.resize(extent, size, interpolation=cv2.INTER_LINEAR) / np.maximum(cover, 1e-6) * f
    obs = cv2.resize(observable.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) >= 0.5
    return img, (lab, np.where(lab, ext, 0.0).astype(np.float32), obs)


def _fit_and_crop(
    img: np.ndarray, maps: Maps, out: int, rng: np.random.Generator
) -> tuple[np.ndarray, Maps, tuple[int, int, int, int]]:
    h, w = img.shape[:2]
    if min(h, w) < out:
        img, maps = _rescale(img, maps, out / min(h, w))
        h, w = img.shape[:2]
    x0 = int(rng.integers(0, w - out + 1))
    y0 = int(rng.integers(0, h - out + 1))
    sl = (slice(y0, y0 + out), slice(x0, x0 + out))
    cropped = tuple(m[sl].copy() for m in maps)
    return img[sl].copy(), cropped, (x0, y0, x0 + out, y0 + out)  # type: ignore[return-value]


class BlurSynthDataset:
    """A map-style PyTorch dataset of synthetic samples, made on the fly.

    Sample ``i`` depends only on (seed, i): each index draws its own generator,
    so DataLoader workers need no coordination and a run is reproducible. Sources are
    visited in a seeded permutation, so every source appears once per ``len(sources)``
    indices. A source that fails to decode is logged once and replaced, deterministically,
    by the next one in the permutation. Give DataLoaders ``multiprocessing_context="spawn"``:
    workers forked after OpenCV has started its thread pool can deadlock.
    """

    def __init__(
        self,
        sources: Sequence[Path],
        cfg: SynthConfig | None = None,
        *,
        length: int | None = None,
        seed: int = 0,
        mask_sources: Sequence[str] = DEFAULT_MASK_SOURCES,
        cache_dir: Path | None = None,
        source_weights: Sequence[float] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("a synthetic dataset needs at least one source image")
        if source_weights is not None and len(source_weights) != len(sources):
            raise ValueError(f"{len(source_weights)} source weights for {len(sources)} sources")
        self.sources = list(sources)
        self.cfg = cfg or SynthConfig()
        self.length = length if length is not None else len(self.sources)
        self.seed = seed
        self.mask_source_names = tuple(mask_sources)
        self.cache_dir = cache_dir
        self._order = np.random.default_rng(seed).permutation(len(self.sources))
        self._weights = None
        if source_weights is not None:
            w = np.asarray(source_weights, np.float64)[self._order]
            self._weights = w / w.sum()
        self._cache: InstanceCache | None = None
        self._bad: set[Path] = set()

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        """The sample at ``index`` as numpy arrays, with its parameters recorded.

        A share of samples (``graphics.prob``) is generated graphic art (titles, logos,
        flat shapes) rather than a photo: artwork is full of it, and its flat areas and hard
        edges must read as sharp, while its elements can still be blurred.
        """
        if not 0 <= index < self.length:
            raise IndexError(index)
        # The middle 0 keeps the streams of data sets made before this key lost its epoch.
        rng = np.random.default_rng([self.seed, 0, index])
        g = self.cfg.graphics
        if rng.random() < g.prob:
            side = int(round(loguniform(rng, *self.cfg.sampling.short_side)))
            aspect = loguniform(rng, 0.6, 1.8)
            size = (max(side, round(side * aspect)), max(side, round(side / aspect)))
            image, instances, record = render_graphic(rng, size, g)
            sample = synthesize(image, instances, rng, self.cfg)
            sample.params = {
                "index": index,
                "source": "graphic",
                "graphic": record,
                **sample.params,
            }
            return sample
        start = index if self._weights is None else int(rng.choice(len(self._order), p=self._weights))
        for step in range(len(self.sources)):
            path = self.sources[self._order[(start + step) % len(self.sources)]]
            if path in self._bad:
                continue
            try:
                image = load_source(path)
            except SourceError as exc:
                log.warning("skipping source %s: %s", path, exc)
                self._bad.add(path)
                continue
            instances = self._instances().get(path, image)
            extra: dict = {}
            if rng.random() < g.overlay_prob:
                image, drawn, extra["overlay"] = overlay_graphics(image, rng, g)
                instances = [*instances, *drawn]
            sample = synthesize(image, instances, rng, self.cfg)
            sample.params = {"index": index, "source": path.name, **extra, **sample.params}
            return sample
        raise SourceError("no usable source image is left")

    def __getitem__(self, index: int) -> dict:
        import torch

        s = self.sample(index)
        return {
            "image": torch.from_numpy(s.image).permute(2, 0, 1).float().div_(255.0),
            "mask": torch.from_numpy(s.mask).unsqueeze(0).float().div_(255.0),
            "intensity": torch.from_numpy(s.intensity).unsqueeze(0),
            "observable": torch.from_numpy(s.observable).unsqueeze(0).float().div_(255.0),
        }

    def _instances(self) -> InstanceCache:
        # Built lazily so each DataLoader worker makes its own (cascades are not picklable).
        if self._cache is None:
            self._cache = InstanceCache(build_mask_sources(self.mask_source_names), self.cache_dir)
        return self._cache

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state
