"""Generated graphic art: titles, logos, flat shapes, cel-shaded drawings on smooth grounds.

Streaming artwork is often designed rather than photographed. Its edges are vector-sharp,
its text is crisper than any photo and its gradients have no edges at all, so a detector
trained on photos alone calls a gradient blurred and has never seen a blurred title. Every
drawn element is returned as an :class:`Instance` so the blur step can blur it like a
photographed object, and every choice is drawn from the caller's ``rng`` and recorded.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import cv2
import numpy as np

from model_training.synth.config import GraphicsConfig
from model_training.synth.instances import Instance

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)
ALPHABET = np.array(list(string.ascii_letters + string.digits))
SHAPES = ("ellipse", "rectangle", "polygon", "star")
#: Fixed-point bits for sub-pixel polygon vertices, so anti-aliased edges land anywhere.
_SHIFT = 4
#: An element's visible coverage above which a pixel belongs to its instance mask.
_MASK_COVERAGE = 0.1


class _Layer:
    """One element: premultiplied colour and coverage, painted primitive by primitive, so
    fill, outline and shadow of one title are a single instance composited in one step."""

    def __init__(self, kind: str, shape: tuple[int, int]) -> None:
        self.kind = kind
        self.colour = np.zeros((*shape, 3), np.float32)
        self.alpha = np.zeros(shape, np.float32)

    def paint(self, coverage: np.ndarray, colour: np.ndarray, opacity: float = 1.0) -> None:
        c = (coverage * opacity)[..., None]
        self.colour = self.colour * (1.0 - c) + c * colour
        self.alpha = self.alpha * (1.0 - c[..., 0]) + c[..., 0]

    def over(self, image: np.ndarray) -> np.ndarray:
        return image * (1.0 - self.alpha[..., None]) + self.colour


def render_graphic(
    rng: np.random.Generator, size: tuple[int, int], cfg: GraphicsConfig
) -> tuple[np.ndarray, list[Instance], dict]:
    """A whole graphic of ``size`` = (w, h): a smooth background and ``cfg.elements`` drawn
    elements.

    Returns the uint8 RGB image, one instance per element still visible after later
    elements were drawn over it (its mask is the visible footprint, so blurring it never
    smears an element in front), and a JSON-serialisable record.
    """
    w, h = size
    image, background = _background(rng, (h, w), cfg)
    layers: list[_Layer] = []
    records: list[dict] = []
    for _ in range(int(rng.integers(cfg.elements[0], cfg.elements[1] + 1))):
        kind = _pick(rng, cfg.kind_weights)
        layer, rec = _DRAW[kind](rng, image, cfg)
        image = layer.over(image)
        layers.append(layer)
        records.append(rec)
    instances = _instances(layers, records)
    record = {"source": "graphic", "size": [w, h], "background": background, "elements": records}
    return _to_u8(image), instances, record


def overlay_graphics(
    photo: np.ndarray, rng: np.random.Generator, cfg: GraphicsConfig
) -> tuple[np.ndarray, list[Instance], dict]:
    """Box art: a title over a photo (uint8 RGB HxWx3), sometimes with a logo in a corner.

    Only the drawn elements are returned as instances; the photo's own instances stay the
    caller's, and pixels away from the drawn elements are left exactly as they were.
    """
    h, w = photo.shape[:2]
    image = photo.astype(np.float32) / 255.0
    layers: list[_Layer] = []
    records: list[dict] = []
    layer, rec = _text(rng, image, cfg, title=True)
    image = layer.over(image)
    layers.append(layer)
    records.append(rec)
    if rng.random() < cfg.overlay_logo_prob:
        lo = cfg.shape_size[0]
        side = float(rng.uniform(lo, 0.5 * (lo + cfg.shape_size[1]))) * min(h, w)
        corner = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
        margin = 0.5 * side + 0.03 * min(h, w)
        centre = (
            margin if corner[0] == 0 else w - margin,
            margin if corner[1] == 0 else h - margin,
        )
        layer, rec = _logo(rng, image, cfg, centre=centre, side=side)
        image = layer.over(image)
        layers.append(layer)
        records.append(rec)
    instances = _instances(layers, records)
    out = np.where(np.stack([lay.alpha for lay in layers]).max(axis=0)[..., None] > 0, _to_u8(image), photo)
    return out, instances, {"source": "overlay", "elements": records}


def _background(rng: np.random.Generator, shape: tuple[int, int], cfg: GraphicsConfig) -> tuple[np.ndarray, dict]:
    h, w = shape
    kind = _pick(rng, cfg.background_weights)
    c0, c1 = _colour(rng), _colour(rng)
    rec: dict = {"kind": kind, "colours": [c0.round(4).tolist(), c1.round(4).tolist()]}
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "flat":
        t = np.zeros((h, w), np.float32)
    elif kind == "linear":
        angle = float(rng.uniform(0, 2 * np.pi))
        proj = xs * np.cos(angle) + ys * np.sin(angle)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
        rec["angle"] = round(angle, 4)
    elif kind == "radial":
        cx, cy = float(rng.uniform(0, 1)), float(rng.uniform(0, 1))
        radius = float(rng.uniform(0.5, 1.5))
        t = np.clip(np.hypot(xs / w - cx, ys / h - cy) / radius, 0.0, 1.0)
        rec.update(centre=[round(cx, 4), round(cy, 4)], radius=round(radius, 4))
    else:
        cells = int(rng.integers(3, 9))
        t = np.zeros((h, w), np.float32)
        for octave, weight in ((1, 1.0), (3, 0.35)):
            coarse = rng.random((cells * octave, cells * octave)).astype(np.float32)
            t += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        rec["cells"] = cells
    return c0 * (1.0 - t[..., None]) + c1 * t[..., None], rec


def _text(
    rng: np.random.Generator, image: np.ndarray, cfg: GraphicsConfig, *, title: bool = False
) -> tuple[_Layer, dict]:
    """Hershey text anywhere, or as a title: centred, in the top or bottom third."""
    h, w = image.shape[:2]
    text = "".join(rng.choice(ALPHABET, int(rng.integers(cfg.text_length[0], cfg.text_length[1] + 1))))
    font = int(FONTS[int(rng.integers(len(FONTS)))]) | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    cap = min(max(6.0, float(rng.uniform(*cfg.text_height)) * h), 0.8 * h)
    weight = float(rng.uniform(0.05, 0.15))
    scale, thickness, (tw, th), base = _fit_text(text, font, cap, weight, 0.95 * w)
    if title:
        x = (w - tw) / 2 + float(rng.uniform(-0.1, 0.1)) * max(w - tw, 0)
        band = (0.05, 0.33) if rng.random() < 0.5 else (0.67, 0.95)
        y = float(rng.uniform(*band)) * h + th / 2
    else:
        x = float(rng.uniform(0, max(w - tw, 1)))
        y = float(rng.uniform(th, max(h - base, th + 1)))
    org = (int(x), int(min(max(y, th), h - 1)))
    box = (org[0], org[1] - th, org[0] + tw, org[1] + base)

    def glyphs(extra: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        return _cover(
            (h, w),
            lambda c: cv2.putText(
                c,
                text,
                (org[0] + offset[0], org[1] + offset[1]),
                font,
                scale,
                255,
                thickness + 2 * extra,
                cv2.LINE_AA,
            ),
        )

    layer = _Layer("text", (h, w))
    fill = _contrasting(rng, _region_luma(image, box), cfg.min_contrast)
    rec: dict = {
        "kind": "text",
        "text": text,
        "font": font,
        "scale": round(scale, 4),
        "thickness": thickness,
        "origin": list(org),
        "fill": fill.round(4).tolist(),
    }
    outline = max(1, round(thickness * float(rng.uniform(0.4, 1.2))))
    if rng.random() < cfg.shadow_prob:
        d = max(1, round(th * float(rng.uniform(0.04, 0.12))))
        soft = float(th * 0.04) if rng.random() < 0.5 else 0.0
        shadow = glyphs(outline, (d, d))
        if soft > 0.3:
            shadow = cv2.GaussianBlur(shadow, (0, 0), soft)
        opacity = float(rng.uniform(0.5, 0.9))
        layer.paint(shadow, np.zeros(3, np.float32), opacity)
        rec["shadow"] = {"offset_px": d, "soft_px": round(soft, 3), "opacity": round(opacity, 3)}
    if rng.random() < cfg.outline_prob:
        layer.paint(glyphs(outline), _contrasting(rng, _luma(fill), cfg.min_contrast))
        rec["outline_px"] = outline
    layer.paint(glyphs(0), fill)
    return layer, rec


def _fit_text(
    text: str, font: int, cap: float, weight: float, max_width: float
) -> tuple[float, int, tuple[int, int], int]:
    """Scale and stroke for a cap height (px) and stroke weight (fraction of it), shrunk
    to fit ``max_width``: (scale, thickness, (width, height), baseline)."""
    (_, th1), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = cap / max(th1, 1)
    for _ in range(2):
        thickness = max(1, round(weight * cap))
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        if tw <= max_width:
            break
        scale *= max_width / tw
        cap *= max_width / tw
    return scale, thickness, (tw, th), base


def _shape(
    rng: np.random.Generator,
    image: np.ndarray,
    cfg: GraphicsConfig,
    *,
    centre: tuple[float, float] | None = None,
    side: float | None = None,
    kinds: tuple[str, ...] = SHAPES,
    kind: str = "shape",
) -> tuple[_Layer, dict]:
    """A flat filled ellipse, rotated rectangle, polygon or star, maybe outlined."""
    h, w = image.shape[:2]
    side = side if side is not None else float(rng.uniform(*cfg.shape_size)) * min(h, w)
    if centre is None:
        centre = (float(rng.uniform(0.1, 0.9)) * w, float(rng.uniform(0.1, 0.9)) * h)
    shape = kinds[int(rng.integers(len(kinds)))]
    aspect = float(rng.uniform(0.6, 1.0))
    angle = float(rng.uniform(0, 180))
    r = side / 2
    if shape == "ellipse":
        pts = cv2.ellipse2Poly((0, 0), (1000, round(1000 * aspect)), round(angle), 0, 360, 5) / 1000 * r
    elif shape == "rectangle":
        pts = cv2.boxPoints(((0.0, 0.0), (side, side * aspect), angle))
    else:
        n = int(rng.integers(3, 9) if shape == "polygon" else rng.integers(5, 9))
        theta = np.linspace(0, 2 * np.pi, 2 * n if shape == "star" else n, endpoint=False)
        theta = theta + np.deg2rad(angle)
        if shape == "star":
            radii = np.where(np.arange(theta.size) % 2 == 0, r, r * float(rng.uniform(0.35, 0.6)))
        else:
            radii = r * rng.uniform(0.75, 1.0, theta.size)
        pts = np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)
    poly = _fixed(np.asarray(pts, np.float64) + np.asarray(centre))
    box = _bbox(poly)
    fill = _contrasting(rng, _region_luma(image, box), cfg.min_contrast)
    layer = _Layer(kind, (h, w))
    layer.paint(_cover((h, w), lambda c: cv2.fillPoly(c, [poly], 255, cv2.LINE_AA, _SHIFT)), fill)
    rec: dict = {
        "kind": kind,
        "shape": shape,
        "centre": [round(float(v), 2) for v in centre],
        "side_px": round(side, 2),
        "fill": fill.round(4).tolist(),
    }
    if rng.random() < cfg.outline_prob:
        t = max(1, round(side * float(rng.uniform(0.02, 0.06))))
        layer.paint(
            _cover((h, w), lambda c: cv2.polylines(c, [poly], True, 255, t, cv2.LINE_AA, _SHIFT)),
            _contrasting(rng, _luma(fill), cfg.min_contrast),
        )
        rec["outline_px"] = t
    rec["box"] = list(box)
    return layer, rec


def _logo(
    rng: np.random.Generator,
    image: np.ndarray,
    cfg: GraphicsConfig,
    *,
    centre: tuple[float, float] | None = None,
    side: float | None = None,
) -> tuple[_Layer, dict]:
    """A badge (ellipse, rectangle or polygon) with a short word inside, like a studio logo."""
    h, w = image.shape[:2]
    layer, rec = _shape(
        rng,
        image,
        cfg,
        centre=centre,
        side=side,
        kinds=("ellipse", "rectangle", "polygon"),
        kind="logo",
    )
    text = "".join(rng.choice(ALPHABET[26:], int(rng.integers(1, 5))))
    font = int(FONTS[int(rng.integers(len(FONTS)))])
    x0, y0, x1, y1 = rec["box"]
    scale, thickness, (tw, th), _ = _fit_text(
        text, font, 0.35 * (y1 - y0), float(rng.uniform(0.08, 0.15)), 0.6 * (x1 - x0)
    )
    org = (round((x0 + x1 - tw) / 2), round((y0 + y1 + th) / 2))
    ink = _contrasting(rng, _luma(np.asarray(rec["fill"], np.float32)), cfg.min_contrast)
    layer.paint(
        _cover(
            (h, w),
            lambda c: cv2.putText(c, text, org, font, scale, 255, thickness, cv2.LINE_AA),
        ),
        ink,
    )
    rec.update(text=text, font=font, text_scale=round(scale, 4))
    return layer, rec


def _drawn(rng: np.random.Generator, image: np.ndarray, cfg: GraphicsConfig) -> tuple[_Layer, dict]:
    """Cel-shaded drawn art: 1-3 smooth blobs, each with a hard-edged shadow tone and a
    dark ink outline, as in animation or comics."""
    h, w = image.shape[:2]
    side = float(rng.uniform(*cfg.shape_size)) * min(h, w)
    centre = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])
    light = float(rng.uniform(0, 2 * np.pi))
    layer = _Layer("drawn", (h, w))
    ink = np.full(3, float(rng.uniform(0.0, 0.15)), np.float32)
    ink_px = max(1, round(side * float(rng.uniform(0.015, 0.04))))
    blobs = []
    for _ in range(int(rng.integers(1, 4))):
        c = centre + rng.uniform(-0.3, 0.3, 2) * side
        r = side / 2 * float(rng.uniform(0.5, 1.0))
        outline = _blob(rng, r) + c
        poly = _fixed(outline)
        # The blob moved towards the light; where it no longer covers is the shadow side.
        shifted = _fixed(outline + 0.25 * r * np.array([np.cos(light), np.sin(light)]))
        base = _cover((h, w), lambda cv, p=poly: cv2.fillPoly(cv, [p], 255, cv2.LINE_AA, _SHIFT))
        lit = _cover((h, w), lambda cv, p=shifted: cv2.fillPoly(cv, [p], 255, cv2.LINE_AA, _SHIFT))
        fill = _contrasting(rng, _region_luma(image, _bbox(poly)), cfg.min_contrast)
        layer.paint(base, fill)
        layer.paint(base * (1.0 - lit), fill * 0.6)
        layer.paint(
            _cover(
                (h, w),
                lambda cv, p=poly: cv2.polylines(cv, [p], True, 255, ink_px, cv2.LINE_AA, _SHIFT),
            ),
            ink,
        )
        blobs.append(
            {
                "centre": [round(float(v), 2) for v in c],
                "radius_px": round(r, 2),
                "fill": fill.round(4).tolist(),
            }
        )
    return layer, {"kind": "drawn", "ink_px": ink_px, "light": round(light, 4), "blobs": blobs}


_DRAW: dict[str, Callable[..., tuple[_Layer, dict]]] = {
    "text": _text,
    "shape": _shape,
    "logo": _logo,
    "drawn": _drawn,
}


def _blob(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A smooth closed outline: a circle perturbed by a few low harmonics."""
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4):
        r += float(rng.uniform(0, 0.3 / k)) * np.cos(k * theta + float(rng.uniform(0, 2 * np.pi)))
    return np.stack([radius * r * np.cos(theta), radius * r * np.sin(theta)], axis=1)


def _instances(layers: list[_Layer], records: list[dict]) -> list[Instance]:
    """Each element's visible footprint, front to back; fully hidden elements are dropped."""
    covered = np.zeros_like(layers[0].alpha)
    found: list[Instance] = []
    for layer, rec in zip(reversed(layers), reversed(records), strict=False):
        mask = (layer.alpha * (1.0 - covered) > _MASK_COVERAGE).astype(np.uint8) * 255
        covered = covered + layer.alpha * (1.0 - covered)
        rec["instance"] = bool(mask.any())
        if rec["instance"]:
            found.append(Instance(mask, layer.kind))
    return found[::-1]


def _cover(shape: tuple[int, int], draw: Callable[[np.ndarray], object]) -> np.ndarray:
    """Anti-aliased coverage (0..1) of whatever ``draw`` paints in 255 on a blank canvas."""
    canvas = np.zeros(shape, np.uint8)
    draw(canvas)
    return canvas.astype(np.float32) / 255.0


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _bbox(poly: np.ndarray) -> tuple[int, int, int, int]:
    p = poly.reshape(-1, 2) / (1 << _SHIFT)
    return (
        int(p[:, 0].min()),
        int(p[:, 1].min()),
        int(np.ceil(p[:, 0].max())),
        int(np.ceil(p[:, 1].max())),
    )


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.random(3).astype(np.float32)


def _luma(colour: np.ndarray) -> float:
    return float(np.dot(colour, (0.299, 0.587, 0.114)))


def _region_luma(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    h, w = image.shape[:2]
    x0, y0 = min(max(box[0], 0), w - 1), min(max(box[1], 0), h - 1)
    region = image[y0 : max(box[3], y0 + 1), x0 : max(box[2], x0 + 1)]
    return _luma(region.reshape(-1, 3).mean(axis=0))


def _contrasting(rng: np.random.Generator, luma: float, min_contrast: float) -> np.ndarray:
    """A random colour at least ``min_contrast`` in luminance from ``luma``, so a later blur
    of the element is visible; black or white when random draws keep missing."""
    for _ in range(8):
        c = _colour(rng)
        if abs(_luma(c) - luma) >= min_contrast:
            return c
    return np.full(3, 0.0 if luma > 0.5 else 1.0, np.float32)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
