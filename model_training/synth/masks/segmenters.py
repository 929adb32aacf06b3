"""Learned segmenters (TorchScript, SAM) that plug in when their weights are given."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from model_training.synth.instances import Instance
from model_training.synth.masks.base import MaskSourceError, _check_image, _to_u8


class SegmenterSource(ABC):
    """Base for learned segmenters that plug in when a weights file is supplied.

    The weights are checked at construction, so a wrong path fails before a long run starts,
    but loaded lazily on first use, so the source can be sent to data-loader workers.
    """

    kind = "segmenter"

    def __init__(self, name: str, weights_path: Path | str) -> None:
        self.name = name
        self.weights_path = Path(weights_path)
        if not self.weights_path.is_file():
            raise MaskSourceError(f"{name}: weights file {self.weights_path} does not exist")
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def __call__(self, image: np.ndarray) -> list[Instance]:
        _check_image(image)
        if self._model is None:
            self._model = self._load()
        return [Instance(_to_u8(mask), self.kind, float(score)) for mask, score in self._segment(image) if mask.any()]

    @abstractmethod
    def _load(self) -> Any:
        """The model object ``_segment`` uses; called once, on first use."""

    @abstractmethod
    def _segment(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Boolean HxW masks with a confidence each."""


class TorchScriptSegmenter(SegmenterSource):
    """Any TorchScript model mapping 1x3xHxW in [0, 1] to 1xNxhxw logits (instances or, with
    N = 1, a foreground map); logits are resized to the image if needed and cut at 0."""

    def __init__(self, weights_path: Path | str, name: str = "torchscript") -> None:
        super().__init__(name, weights_path)

    def _load(self) -> Any:
        import torch

        try:
            model = torch.jit.load(str(self.weights_path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise MaskSourceError(
                f"{self.name}: {self.weights_path} is not a loadable TorchScript file: {exc}"
            ) from exc
        return model.eval()

    def _segment(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        import torch
        import torch.nn.functional as F

        height, width = image.shape[:2]
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            logits = self._model(tensor.float() / 255.0)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[0] != 1:
                raise MaskSourceError(
                    f"{self.name}: model must return a 1xNxHxW tensor, got "
                    f"{getattr(logits, 'shape', type(logits).__name__)}"
                )
            logits = logits.float()
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = torch.sigmoid(logits[0]).numpy()
            masks = (logits[0] > 0).numpy()
        return [
            (mask, float(prob[mask].mean()) if mask.any() else 0.0)
            for mask, prob in zip(masks, probabilities, strict=True)
        ]


class SamSource(SegmenterSource):
    """Segment Anything's automatic mask generator, the paper's own mask source."""

    kind = "sam"

    def __init__(
        self,
        weights_path: Path | str,
        model_type: str = "vit_b",
        *,
        device: str = "cpu",
        generator_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__("sam", weights_path)
        try:
            import segment_anything  # noqa: F401
        except ImportError as exc:
            raise MaskSourceError(
                "sam: the segment_anything package is not installed; install segment-anything "
                f"to use SAM masks (weights are read from {self.weights_path}, never downloaded)"
            ) from exc
        self.model_type = model_type
        self.device = device
        self.generator_kwargs = dict(generator_kwargs or {})

    def _load(self) -> Any:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

        if self.model_type not in sam_model_registry:
            raise MaskSourceError(
                f"sam: unknown model_type {self.model_type!r}; choose from {sorted(sam_model_registry)}"
            )
        sam = sam_model_registry[self.model_type](checkpoint=str(self.weights_path))
        return SamAutomaticMaskGenerator(sam.to(self.device), **self.generator_kwargs)

    def _segment(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        return [
            (np.asarray(record["segmentation"], bool), float(record.get("predicted_iou", 1.0)))
            for record in self._model.generate(image)
        ]
