"""The shipped checkpoint format: safetensors weights plus everything needed to trust them.

One ``.safetensors`` file. Its header metadata (string to string, by the format's rules)
carries JSON for the architecture, the frequency-channel definition, the decision
thresholds, a summary of the training data, the metrics, the code version, and a SHA-256
over every tensor's name, dtype, shape and bytes. Loading rebuilds the model from that
metadata alone and refuses a file whose checksum or architecture does not match, with a
message that says which.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qc_worker import __version__
from qc_worker.detector.model import BlurDetector, ModelConfig
from qc_worker.storage import new_file_mode

FORMAT = "artwork-qc-detector/1"


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted or used, with the reason."""


@dataclass
class CheckpointMeta:
    model: ModelConfig
    thresholds: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    code_version: str = __version__
    checksum: str = ""
    dtype: str = "float16"


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: Path,
    model: BlurDetector,
    *,
    thresholds: dict | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
    dtype: torch.dtype = torch.float16,
) -> CheckpointMeta:
    """Write ``model`` (floating tensors cast to ``dtype``) with its metadata, atomically."""
    tensors = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = CheckpointMeta(
        model=model.config,
        thresholds=thresholds or {},
        training=training or {},
        metrics=metrics or {},
        checksum=tensor_checksum(tensors),
        dtype=str(dtype).removeprefix("torch."),
    )
    header = {
        "format": FORMAT,
        "model": json.dumps(meta.model.to_dict()),
        "thresholds": json.dumps(meta.thresholds),
        "training": json.dumps(meta.training, default=str),
        "metrics": json.dumps(meta.metrics),
        "code_version": meta.code_version,
        "checksum": meta.checksum,
        "dtype": meta.dtype,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.chmod(tmp, new_file_mode())  # safetensors creates it 0600
    tmp.replace(path)
    return meta


def read_meta(path: Path) -> CheckpointMeta:
    """The metadata of a checkpoint, without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    return _parse_header(path, header)


def _parse_header(path: Path, header: dict) -> CheckpointMeta:
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: format {header.get('format')!r} is not {FORMAT!r}; "
            "convert a training checkpoint with `qc-train export`"
        )
    try:
        return CheckpointMeta(
            model=ModelConfig.from_dict(json.loads(header["model"])),
            thresholds=json.loads(header.get("thresholds", "{}")),
            training=json.loads(header.get("training", "{}")),
            metrics=json.loads(header.get("metrics", "{}")),
            code_version=header.get("code_version", "?"),
            checksum=header.get("checksum", ""),
            dtype=header.get("dtype", "?"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint metadata ({exc})") from exc


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[BlurDetector, CheckpointMeta]:
    """Rebuild and load a detector; refuse anything corrupt or mismatched, saying why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({exc})") from exc
    got = tensor_checksum(tensors)
    if got != meta.checksum:
        raise CheckpointError(
            f"{path}: checksum mismatch (file says {meta.checksum[:12]}, tensors hash to {got[:12]}): "
            "the file is corrupt or was edited"
        )
    try:
        model = BlurDetector(meta.model)
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or extra or wrong:
        raise CheckpointError(
            f"{path}: weights do not match a {meta.model.encoder} detector "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
    model.to(device=device, dtype=dtype).eval()
    return model, meta
