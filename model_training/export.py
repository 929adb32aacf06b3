"""`qc-train export`: a training checkpoint -> the shipped fp16 safetensors format.

The shipped file must be trustworthy on its own, so export gathers into its metadata the
decision thresholds chosen by evaluation, the test metrics, and a summary of how the
model was trained (steps, wall time, sources per split, the recipe).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model_training.evaluate import OURS
from qc_worker.detector.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from qc_worker.detector.inference import serving_model
from qc_worker.detector.model import BlurDetector, ModelConfig
from qc_worker.detector.scales import check_frame_scales


def training_summary(run: Path) -> dict:
    """Steps, wall time, split sizes and recipe of a run folder (what the card reports)."""
    summary: dict = {}
    cfg_file = run / "train_config.json"
    if cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
        summary["config"] = cfg
    splits_file = run / "splits.json"
    if splits_file.exists():
        splits = json.loads(splits_file.read_text())
        summary["sources"] = {k: len(v) for k, v in splits.items()}
        summary["source_folders"] = sorted({str(Path(p).parent) for v in splits.values() for p in v})
    metrics_file = run / "metrics.jsonl"
    if metrics_file.exists():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        if rows:
            summary["steps"] = rows[-1]["step"]
            summary["wall_time_s"] = rows[-1].get("elapsed_s")
    return summary


def load_training_model(checkpoint: Path) -> BlurDetector:
    """A float32 model in eval mode from a shipped .safetensors or a training .pt checkpoint."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".safetensors":
        return load_checkpoint(checkpoint)[0].float().eval()
    return _load_training_state(checkpoint)[0].eval()


def load_served_model(checkpoint: Path) -> BlurDetector:
    """The float32 model of ``checkpoint`` as screening runs it on the CPU
    (:func:`qc_worker.detector.inference.serving_model`). Evaluation judges this one, so its
    numbers are those of the maps calibration and screening threshold."""
    return serving_model(load_training_model(checkpoint), torch.device("cpu"))


def _load_training_state(checkpoint: Path) -> tuple[BlurDetector, dict]:
    """The model of a ``best_model.pt`` / ``train_state.pt`` and the state dict it came in."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise ValueError(f"{checkpoint}: not a training checkpoint (needs 'model' and 'model_config')")
    model = BlurDetector(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model, state


def export(
    checkpoint: Path,
    out: Path,
    *,
    results: Path | None = None,
    run: Path | None = None,
    calibration: Path | None = None,
) -> CheckpointMeta:
    """Write ``out`` from ``checkpoint`` (``best_model.pt`` or ``train_state.pt``, or a
    shipped ``.safetensors`` to re-export).

    Thresholds and metrics come from an evaluation ``results.json`` when given (the
    model's own pixel and image thresholds); otherwise 0.5, stated as unevaluated. A
    ``calibration.json`` (``qc-train calibrate``) then replaces the pixel threshold (and
    the whole-frame threshold with the sizes it reads the frame at) with those chosen on
    real screening verdicts, and its
    per-set results join the metrics; the blur-IoU pixel threshold stays as ``pixel_iou``.

    Re-exporting a shipped file keeps its training summary, metrics and thresholds unless
    ``results`` or ``calibration`` replace them: that is how a model whose training run is
    gone is recalibrated. Its fp16 tensors, and so its checksum, stay the same.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".safetensors":
        model, meta = load_checkpoint(checkpoint)
        thresholds, metrics, training = (
            dict(meta.thresholds),
            dict(meta.metrics),
            dict(meta.training),
        )
    else:
        model, state = _load_training_state(checkpoint)
        thresholds = {"pixel": 0.5, "image": 0.5, "source": "default (not evaluated)"}
        metrics = {}
        training = training_summary(Path(run) if run else checkpoint.parent)
        training["checkpoint_step"] = state.get("step")
    if results is not None:
        r = json.loads(Path(results).read_text())
        thresholds = {
            **r["thresholds"][OURS],
            # Kept through calibration: qc-train calibrate centres its pixel window on it.
            "pixel_iou": r["thresholds"][OURS]["pixel"],
            "source": f"grid search on validation ({r['n_val']} images)",
        }
        metrics = {
            "pixel": r["pixel"].get(OURS, {}),
            "image": r["image"].get(OURS, {}),
            "n_test": r["n_test"],
        }
    if calibration is not None:
        c = json.loads(Path(calibration).read_text())
        thresholds.update(pixel=c["threshold"], pixel_source=f"qc-train calibrate: {c['chosen_by']}")
        thresholds.pop("frame", None)
        if c.get("frame_threshold") is not None:
            thresholds["frame"] = c["frame_threshold"]
        # The frame threshold holds for the sizes it was chosen at (a calibration from
        # before frame scales existed read the frame at full size only).
        thresholds["frame_scales"] = list(check_frame_scales(c.get("frame_scales", (1.0,))))
        metrics["real"] = {"groups": c["groups"], "auc": c["auc"]}
    return save_checkpoint(out, model, thresholds=thresholds, training=training, metrics=metrics, dtype=torch.float16)
