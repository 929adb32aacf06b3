"""Faces by MTCNN (Zhang et al., 2016), the network detector screening uses by default.

The nets and their weights come from ``facenet-pytorch`` (MIT), whose wheel carries
``pnet.pt``, ``rnet.pt`` and ``onet.pt``: nothing downloads at run time. Its metadata pins
torch 2.2, which it does not need (it runs on the project's torch), so it is installed with
``--no-deps`` by ``make venv`` and the Dockerfiles; ``requests`` and ``tqdm``, which it
imports, are project dependencies.

Why MTCNN and not the Haar cascades nor BlazeFace: ``bench/faces.py`` (BENCHMARKS.md). It
finds turned, tilted, small, dark, half-covered and blurred faces the cascades miss, gives
each face a probability (O-Net's), and is cheaper than the cascades' profile fallback.

Detection runs on an RGB copy at most :attr:`FaceConfig.max_side` long, with the smallest
face searched for set by :attr:`FaceConfig.min_size_fraction`; boxes come back in the pixels
of the copy, with their O-Net probability.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch

#: A face box in float pixels and its probability.
Found = tuple[tuple[float, float, float, float], float]

#: What to run when ``facenet_pytorch`` is missing (the error message names it).
INSTALL_COMMAND = "pip install --no-deps facenet-pytorch==2.6.0"

#: The three stages' own score thresholds (facenet-pytorch's defaults); the final
#: probability is then held against :attr:`FaceConfig.min_confidence`.
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
#: Pyramid step between scales (facenet-pytorch's default).
PYRAMID_FACTOR = 0.709


class MissingRuntimeError(RuntimeError):
    """The optional package a face detector needs is not installed."""


class _Nets:
    """P-, R- and O-Net with their shipped weights, on the CPU, in eval mode."""

    def __init__(self) -> None:
        try:
            from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
            from facenet_pytorch.models.utils.detect_face import detect_face
        except ImportError as exc:
            raise MissingRuntimeError(
                f"the face detector 'mtcnn' needs facenet-pytorch, which is not installed: run "
                f"`{INSTALL_COMMAND}` (or `make venv`), or set QC_FACES__DETECTOR=haar"
            ) from exc
        self.pnet, self.rnet, self.onet = PNet().eval(), RNet().eval(), ONet().eval()
        self.detect_face = detect_face
        # The nets hold no state between calls, but facenet-pytorch does not say its
        # functions are thread-safe; one lock keeps threaded callers (tests, calibrate) safe.
        self.lock = threading.Lock()

    def detect(self, rgb: np.ndarray, min_face: int) -> list[Found]:
        with self.lock, torch.inference_mode():
            batch_boxes, _ = self.detect_face(
                np.ascontiguousarray(rgb),
                min_face,
                self.pnet,
                self.rnet,
                self.onet,
                list(STAGE_THRESHOLDS),
                PYRAMID_FACTOR,
                torch.device("cpu"),
            )
        found = np.asarray(batch_boxes[0], dtype=np.float64).reshape(-1, 5)
        return [((x0, y0, x1, y1), float(p)) for x0, y0, x1, y1, p in found]


_LOAD_LOCK = threading.Lock()


@functools.cache
def _nets() -> _Nets:
    with _LOAD_LOCK:
        return _Nets()


def load() -> None:
    """Load the nets now (they otherwise load on first use); raise if the package is missing."""
    _nets()


def detect(rgb: np.ndarray, min_face: int) -> list[Found]:
    """(box, probability) of each face in ``rgb`` (uint8 HxWx3) of at least ``min_face`` px,
    boxes as floats in ``rgb``'s pixels (they may reach past its edges)."""
    return _nets().detect(rgb, min_face)
