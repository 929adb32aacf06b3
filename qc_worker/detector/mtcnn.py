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

import cv2
import numpy as np
import torch

from qc_worker.detector.boxes import integral_image, integral_sums

#: A face box in float pixels and its probability.
Found = tuple[tuple[float, float, float, float], float]

#: What to run when ``facenet_pytorch`` is missing (the error message names it).
INSTALL_COMMAND = "pip install --no-deps facenet-pytorch==2.6.0"

#: The three stages' own score thresholds; the final probability is then held against
#: :attr:`FaceConfig.min_confidence`. R- and O-Net's are facenet-pytorch's defaults; P-Net's
#: is stricter than its 0.6 because R-Net's crops and forward were a third of the faces'
#: time, spent on proposals it threw away: on ``bench/faces.py``'s images 0.8 sends R-Net 47
#: proposals per image instead of 106 and finds the same 77 of 88 hard faces, with 10 false
#: detections instead of 12 (0.85 lost a face, 0.9 four).
STAGE_THRESHOLDS = (0.8, 0.7, 0.7)
#: facenet-pytorch's pyramid step between scales; screening's is FaceConfig.pyramid_factor.
FACENET_PYRAMID_FACTOR = 0.709


class MissingRuntimeError(RuntimeError):
    """The optional package a face detector needs is not installed."""


class _Nets:
    """P-, R- and O-Net with their shipped weights, on the CPU, in eval mode, channels-last.

    The cascade is driven here rather than by facenet-pytorch's ``detect_face``, with its
    nets and box helpers, because ``detect_face`` is slow on the CPU: it builds each
    pyramid level with ``interpolate(mode="area")`` from the whole image in float, and
    runs NCHW nets whose max-pooling and small convolutions are slow. Here each level is
    shrunk bilinearly by OpenCV from the uint8 pixels (on the hard-face bench, as many
    faces found as with ``INTER_AREA`` at a tenth of its cost), and the nets run
    channels-last. Candidate crops are still resized facenet-pytorch's way (see
    :func:`_crops`). ``bench/faces.py`` measures both paths on the same images."""

    def __init__(self) -> None:
        try:
            from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
            from facenet_pytorch.models.utils import detect_face
        except ImportError as exc:
            raise MissingRuntimeError(
                f"the face detector 'mtcnn' needs facenet-pytorch, which is not installed: run "
                f"`{INSTALL_COMMAND}` (or `make venv`), or set QC_FACES__DETECTOR=haar"
            ) from exc
        self.pnet, self.rnet, self.onet = (
            net().eval().to(memory_format=torch.channels_last) for net in (PNet, RNet, ONet)
        )
        heads = (self.pnet.conv4_1, self.pnet.conv4_2)  # face/not-face scores, box offsets
        self.pnet_head_weight = torch.cat([h.weight for h in heads]).flatten(1).t().contiguous()
        self.pnet_head_bias = torch.cat([h.bias for h in heads])
        self.helpers = detect_face

    def detect(self, rgb: np.ndarray, min_face: int, factor: float) -> list[Found]:
        """Safe from several threads at once, with no lock: screening analyses the images of
        a batch on several threads. The nets are in eval mode and only read their weights
        under ``inference_mode``, and facenet-pytorch's box helpers write only into the
        tensors of the call (``pad`` gets a clone); a test runs threads against one at a time."""
        with torch.inference_mode():
            boxes = self._propose(rgb, min_face, factor)
            sums = integral_image(rgb)  # for the crops of both later stages
            if len(boxes):
                boxes = self._refine(sums, boxes)
            if len(boxes):
                boxes = self._output(sums, boxes)
        found = boxes.numpy().astype(np.float64).reshape(-1, 5) if len(boxes) else np.zeros((0, 5))
        return [((x0, y0, x1, y1), float(p)) for x0, y0, x1, y1, p in found]

    def _propose(self, rgb: np.ndarray, min_face: int, factor: float) -> torch.Tensor:
        """P-Net over the image pyramid (levels ``factor`` apart): candidate squares
        (x0, y0, x1, y1, score)."""
        h, w = rgb.shape[:2]
        helpers = self.helpers
        scale, side, found = 12.0 / min_face, min(h, w) * 12.0 / min_face, []
        while side >= 12:
            level = cv2.resize(rgb, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_LINEAR)
            reg, probs = self._pnet(_tensor(level[None]))
            boxes, image_inds = helpers.generateBoundingBox(reg, probs[:, 1], scale, STAGE_THRESHOLDS[0])
            found.append(boxes[helpers.batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.5)])
            scale, side = scale * factor, side * factor
        boxes = torch.cat(found) if found else torch.zeros((0, 9))
        boxes = boxes[helpers.batched_nms(boxes[:, :4], boxes[:, 4], _one_image(boxes), 0.7)]
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        shifted = boxes[:, :4] + boxes[:, 5:9] * torch.stack([width, height, width, height], dim=1)
        return helpers.rerec(torch.cat([shifted, boxes[:, 4:5]], dim=1))

    def _pnet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net's forward (box offsets, face probabilities), its two 1x1 heads as one
        matrix product over the channels-last features: the same sums (to float rounding)
        at about half the heads' cost, which on the first pyramid level was an eighth of P-Net's."""
        net = self.pnet
        x = net.prelu1(net.conv1(x))
        x = net.prelu3(net.conv3(net.prelu2(net.conv2(net.pool1(x)))))
        n, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, c)  # no copy: the features are channels-last
        out = torch.addmm(self.pnet_head_bias, flat, self.pnet_head_weight).view(n, h, w, -1).permute(0, 3, 1, 2)
        return out[:, 2:], out[:, :2].softmax(dim=1)

    def _refine(self, sums: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """R-Net on 24x24 crops of the candidates: the ones it keeps, regressed and squared."""
        reg, probs = self.rnet(_crops(sums, boxes, 24, self.helpers))
        keep = probs[:, 1] > STAGE_THRESHOLDS[1]
        boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
        pick = self.helpers.batched_nms(boxes[:, :4], boxes[:, 4], _one_image(boxes), 0.7)
        return self.helpers.rerec(self.helpers.bbreg(boxes[pick], reg[keep][pick]))

    def _output(self, sums: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """O-Net on 48x48 crops: the faces, regressed, overlaps merged the "Min" way."""
        reg, _, probs = self.onet(_crops(sums, boxes, 48, self.helpers))
        keep = probs[:, 1] > STAGE_THRESHOLDS[2]
        boxes = self.helpers.bbreg(torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1), reg[keep])
        pick = self.helpers.batched_nms_numpy(boxes[:, :4], boxes[:, 4], _one_image(boxes), 0.7, "Min")
        return boxes[pick]


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    """NxHxWx3 pixels (uint8 or float) as the nets' normalised float NCHW input,
    channels-last in memory."""
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125


def _one_image(boxes: torch.Tensor) -> torch.Tensor:
    """The image index of each box for facenet-pytorch's batched NMS: all from one image."""
    return torch.zeros(len(boxes), dtype=torch.int64)


def _crops(sums: np.ndarray, boxes: torch.Tensor, side: int, helpers) -> torch.Tensor:
    """Each box's pixels (clipped to the image, as facenet-pytorch's ``pad`` does) resized
    to ``side`` x ``side``, as one batch for R- or O-Net.

    The resize is facenet-pytorch's, ``interpolate(mode="area")``: output cell i of n
    averages input rows ``floor(i * h / n)`` to ``ceil((i + 1) * h / n)``, which for the
    crops smaller than ``side`` differs from OpenCV's upsampling (with OpenCV's crops,
    ``bench/faces.py`` counted 24 false faces instead of 13). Every cell of every crop is
    read at once from the image's integral ``sums`` ((H+1) x (W+1) x 3,
    :func:`~qc_worker.detector.boxes.integral_image`) by
    :func:`~qc_worker.detector.boxes.integral_sums`: resizing crop by crop cost as much as
    R- and O-Net together."""
    height, width = sums.shape[0] - 1, sums.shape[1] - 1
    y0, y1, x0, x1 = (v.astype(np.int64) for v in helpers.pad(boxes.clone(), width, height))
    top, left = y0 - 1, x0 - 1  # pad's starts are 1-based; its ends are exclusive
    valid = (y1 > top) & (x1 > left)
    top, left = np.where(valid, top, 0), np.where(valid, left, 0)
    rows, cols = np.where(valid, y1 - top, 1)[:, None], np.where(valid, x1 - left, 1)[:, None]
    cell = np.arange(side)[None, :]
    r0, r1 = top[:, None] + cell * rows // side, top[:, None] - (-(cell + 1) * rows // side)
    c0, c1 = left[:, None] + cell * cols // side, left[:, None] - (-(cell + 1) * cols // side)
    r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
    total = integral_sums(sums, r0, c0, r1, c1)
    mean = total / ((r1 - r0) * (c1 - c0))[..., None]
    mean[~valid] = 0.0
    return _tensor(mean.astype(np.float32))


_LOAD_LOCK = threading.Lock()


@functools.cache
def _nets() -> _Nets:
    with _LOAD_LOCK:
        return _Nets()


def load() -> None:
    """Load the nets now (they otherwise load on first use); raise if the package is missing."""
    _nets()


def detect(rgb: np.ndarray, min_face: int, factor: float) -> list[Found]:
    """(box, probability) of each face in ``rgb`` (uint8 HxWx3) of at least ``min_face`` px,
    boxes as floats in ``rgb``'s pixels (they may reach past its edges); ``factor`` is the
    size ratio between pyramid levels."""
    return _nets().detect(rgb, min_face, factor)
