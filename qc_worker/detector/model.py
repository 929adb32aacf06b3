"""SMBlurDetect's network: a U-Net on RGB + blur-frequency, with a mask and an intensity head.

Input normalisation and the frequency channel happen inside the module, so a caller only
ever passes RGB in [0, 1] and training and serving cannot disagree about preprocessing.
Auxiliary mask heads on intermediate decoder stages (deep supervision, paper 3.3) run
only when asked for, so inference pays nothing for them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from qc_worker.detector.frequency import BlurFrequency, FrequencySpec
from qc_worker.detector.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    file_sha256,
    resolve_encoder_weights,
)

log = logging.getLogger(__name__)

ENCODERS = (
    "resnet50",
    "resnet34",
    "resnet18",
    "mobilenet_v2",
    "efficientnet-b0",
    "efficientnet-lite0",
)
#: Our encoder names that segmentation-models-pytorch spells otherwise. EfficientNet-Lite
#: (no squeeze-excitation, ReLU6) is the variant made for CPUs and phones.
SMP_ENCODER_NAMES = {"efficientnet-lite0": "tu-tf_efficientnet_lite0"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the architecture; saved in every checkpoint."""

    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    #: Decoder blocks (0 = deepest) whose outputs get an auxiliary mask head.
    aux_stages: tuple[int, ...] = (1, 2, 3)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    frequency: FrequencySpec = field(default_factory=FrequencySpec)
    #: How the encoder started: "random" or "imagenet:<file name>:<sha256>".
    encoder_init: str = "random"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["frequency"] = FrequencySpec(**d.get("frequency", {}))
        for key in ("decoder_channels", "aux_stages", "mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class DetectorOutput:
    """Mask logits and intensity at input resolution; aux logits at their stage's resolution."""

    logits: torch.Tensor
    intensity: torch.Tensor
    aux: list[torch.Tensor]

    @property
    def probability(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


class BlurDetector(nn.Module):
    """RGB in [0, 1] (N, 3, H, W), any H and W -> :class:`DetectorOutput`."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        if config.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {config.encoder!r}; choose one of {', '.join(ENCODERS)}")
        n_blocks = len(config.decoder_channels)
        if any(not 0 <= s < n_blocks - 1 for s in config.aux_stages):
            raise ValueError(f"aux_stages must lie in 0..{n_blocks - 2}, got {config.aux_stages}")
        self.config = config
        self.frequency = BlurFrequency(config.frequency)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        unet = smp.Unet(
            encoder_name=SMP_ENCODER_NAMES.get(config.encoder, config.encoder),
            encoder_weights=None,
            encoder_depth=n_blocks,
            in_channels=4,
            classes=1,
            decoder_channels=config.decoder_channels,
        )
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        last = config.decoder_channels[-1]
        self.mask_head = nn.Conv2d(last, 1, kernel_size=1)
        self.intensity_head = nn.Conv2d(last, 1, kernel_size=1)
        self.aux_heads = nn.ModuleList(
            nn.Conv2d(config.decoder_channels[s], 1, kernel_size=1) for s in config.aux_stages
        )
        self.stride = 2**n_blocks

    def forward(self, rgb: torch.Tensor, *, with_aux: bool | None = None) -> DetectorOutput:
        with_aux = self.training if with_aux is None else with_aux
        h, w = rgb.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            # Reflect-pad to the encoder's stride and crop back: any input size works.
            rgb = F.pad(rgb, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        x = torch.cat([(rgb - self.mean) / self.std, self.frequency(rgb).to(rgb.dtype)], dim=1)
        features = self.encoder(x)
        shapes = [f.shape[2:] for f in features][::-1]
        skips = features[1:][::-1]
        y = self.decoder.center(skips[0])
        aux = []
        aux_at = dict(zip(self.config.aux_stages, self.aux_heads, strict=True))
        for i, block in enumerate(self.decoder.blocks):
            skip = skips[i + 1] if i + 1 < len(skips) else None
            y = block(y, *shapes[i + 1], skip_connection=skip)
            if with_aux and i in aux_at:
                aux.append(aux_at[i](y))
        logits = self.mask_head(y)[..., :h, :w]
        intensity = torch.sigmoid(self.intensity_head(y))[..., :h, :w]
        return DetectorOutput(logits, intensity, aux)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it, in place.

    For serving only (the model must be in eval mode): a frozen BatchNorm is an affine map,
    so the convolution can absorb it and the forward pass skips a full read and write of
    each feature map. On the CPU the normalisations took about a fifth of the detector's
    time. Pairs are found where the encoders and the U-Net decoder keep them: as neighbours
    in an ``nn.Sequential`` (MobileNetV2, EfficientNet, the decoder, ResNet's downsample) or
    as torchvision ResNet's ``convN`` / ``bnN`` attributes.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (running statistics)")
    for parent in list(model.modules()):
        children = parent._modules
        names = list(children)
        if isinstance(parent, nn.Sequential):
            pairs = list(zip(names, names[1:], strict=False))
        else:
            pairs = [(f"conv{n[2:]}", n) for n in names if n.startswith("bn") and f"conv{n[2:]}" in children]
        for a, b in pairs:
            conv, norm = children[a], children[b]
            # The exact type: timm's BatchNormAct2d subclasses BatchNorm2d and carries an activation.
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d:
                children[a] = fuse_conv_bn_eval(conv, norm)
                children[b] = nn.Identity()
    return model


def load_encoder_weights(model: BlurDetector, path: Path) -> str:
    """Load ImageNet weights for the encoder from a local file; return the provenance string.

    Accepts a torchvision/timm-style state dict (``.pth``/``.pt``) or a ``.safetensors``
    file. The encoder's first convolution takes 4 channels (RGB + frequency): its RGB
    filters are copied and the frequency filter starts as their mean, the usual way to
    extend a pretrained stem. Classifier weights in the file are ignored. Never downloads.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear refusal
            raise ValueError(f"{path} is not a readable torch weights file: {exc}") from exc
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict of tensors")
    own = model.encoder.state_dict()
    if any(key.startswith("_blocks.") for key in state):
        state = _rename_by_layer_order(state, own, path)
    adapted = {}
    for key, value in state.items():
        if key not in own:
            continue
        target = own[key]
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 4:
            value = torch.cat([value, value.mean(dim=1, keepdim=True)], dim=1)
        if value.shape != target.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the encoder needs {tuple(target.shape)}")
        adapted[key] = value
    if len(adapted) < 0.9 * len(own):
        raise ValueError(
            f"{path} does not look like {model.config.encoder} weights: "
            f"only {len(adapted)} of {len(own)} encoder tensors matched"
        )
    model.encoder.load_state_dict(adapted, strict=False)
    return f"imagenet:{path.name}:{file_sha256(path)}"


def _rename_by_layer_order(state: dict, own: dict, path: Path) -> dict:
    """Give an ``efficientnet_pytorch``-style file (``_blocks.3._expand_conv.weight``) timm's
    names (``model.blocks.1.1.conv_pw.weight``), which smp's timm encoders use.

    The two spell the nesting differently (one flat block list against one list per stage)
    but register every layer in the same order (stem, then each block's expansion,
    depthwise and projection convolutions, each followed by its batch norm), so the n-th
    tensor of one is the n-th of the other. The classifier and the 1x1 head before it are
    dropped: a U-Net takes the stages' features, not the head's. Every pair is still
    shape-checked by the caller, so a file of another architecture is refused.
    """
    head = ("_fc.", "_conv_head.", "_bn1.")
    tensors = [value for key, value in state.items() if not key.startswith(head)]
    if len(tensors) != len(own):
        raise ValueError(
            f"{path}: {len(tensors)} encoder tensors in efficientnet_pytorch layout, "
            f"the encoder has {len(own)}: not weights for this architecture"
        )
    return dict(zip(own, tensors, strict=True))


def find_cached_encoder_weights(encoder: str) -> Path | None:
    """A torchvision-style ImageNet file for ``encoder`` already in the torch hub cache, if any."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    hits = sorted(cache.glob(f"{encoder.replace('-', '_')}-*.pth")) if cache.is_dir() else []
    return hits[0] if hits else None


def build_model(config: ModelConfig, encoder_weights: str | Path | None = None) -> BlurDetector:
    """A new detector, with ImageNet encoder weights when asked for or cached.

    ``encoder_weights`` is a file, ``"imagenet"`` (the packaged file for this encoder, see
    :mod:`qc_worker.detector.pretrained`), ``"none"`` (random initialisation on purpose,
    for comparisons) or None (the torch hub cache when it holds a file, else random).
    Random initialisation is logged and recorded in the config (and so in every
    checkpoint) rather than hidden. A packaged file also brings the input normalisation
    it was trained with, which the checkpoint then carries to serving.
    """
    if str(encoder_weights) == "none":
        return BlurDetector(config)
    if encoder_weights is not None:
        path, known = resolve_encoder_weights(encoder_weights, config.encoder)
        if known is not None:
            config = replace(config, mean=known.mean, std=known.std)
    else:
        path = find_cached_encoder_weights(config.encoder)
    model = BlurDetector(config)
    if path is None:
        log.warning(
            "no ImageNet weights for %s given or cached: encoder starts from random initialisation",
            config.encoder,
        )
        return model
    init = load_encoder_weights(model, path)
    model.config = replace(config, encoder_init=init)
    log.info("encoder %s initialised from %s", config.encoder, path)
    return model
