"""The one box renderer (qc_worker.overlay): what is drawn, in which colour, and the heat map."""

import itertools

import cv2
import numpy as np
import pytest

from qc_worker.detector.regions import Region
from qc_worker.detector.roi import Roi
from qc_worker.overlay import (
    BLURRED,
    ROI_COLOURS,
    SHARP,
    aspect_colours,
    draw_boxes,
    encode_overlay,
    layout,
    render_overlay,
)


def _colour_on_edge(img, box, colour, tol=40):
    x0, y0, x1, y1 = box
    edge = np.concatenate([img[y0, x0:x1], img[y1 - 1, x0:x1], img[y0:y1, x0], img[y0:y1, x1 - 1]])
    return (np.abs(edge.astype(int) - colour) <= tol).all(axis=1).mean()


def test_blurred_regions_red_sharp_faces_green_and_never_grid_cells():
    img = np.full((200, 300, 3), 128, np.uint8)
    regions = [
        Region("component", "component_0", (10, 10, 110, 90), 0.13, 1.0, 0.9, 0.3, "blurred"),
        Region("face", "face_0", (150, 100, 250, 190), 0.15, 0.02, 0.1, 0.0, "sharp"),
        Region("foreground", "foreground", (5, 5, 295, 195), 0.95, 0.1, 0.2, 0.0, "sharp"),
        Region("grid", "r0c0", (0, 0, 100, 66), 0.11, 0.6, 0.7, 0.3, "blurred"),
    ]
    out = draw_boxes(img.copy(), regions, thickness=2)
    assert _colour_on_edge(out, (10, 10, 110, 90), BLURRED) > 0.8
    # The face's top edge carries its label; the other three edges are plain green.
    assert _colour_on_edge(out, (150, 150, 250, 190), SHARP) > 0.6
    assert (out[5, 150:295] == 128).all()  # the sharp foreground is not drawn
    assert (out[0, :100] == 128).all()  # nor any grid cell


def test_each_aspect_gets_its_own_colour_and_a_safe_or_unsafe_label():
    rois = [
        Roi("16:9", (0, 20, 300, 189), 0.0, True, 0.85, True),
        Roi("1:1", (50, 0, 250, 200), 0.2, False, 0.67, True),
        Roi("16:9", (0, 0, 300, 169), 0.1, False, 0.85, True),
    ]
    colours = aspect_colours(rois)
    assert list(colours) == ["16:9", "1:1"] and colours["16:9"] != colours["1:1"]
    out = draw_boxes(np.zeros((200, 300, 3), np.uint8), rois=rois, thickness=2)
    assert _colour_on_edge(out, (50, 0, 250, 200), colours["1:1"]) > 0.5
    assert (out == colours["16:9"]).all(axis=-1).sum() > 300


def test_the_overlay_tints_where_the_blur_is():
    rgb = np.full((120, 160, 3), 200, np.uint8)
    prob = np.zeros((120, 160), np.float32)
    prob[:, 80:] = 1.0
    out = render_overlay(rgb, prob)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    left, right = out[60, 20].astype(int), out[60, 140].astype(int)
    assert left[0] == left[1] == left[2]  # grey where sharp
    assert np.ptp(right) > 60  # coloured where blurred
    assert encode_overlay(out)[:2] == b"\xff\xd8"


def _lab(colour) -> np.ndarray:
    return cv2.cvtColor(np.float32([[colour]]) / 255.0, cv2.COLOR_RGB2Lab)[0, 0]


def test_crop_colours_are_far_from_the_faces_green_the_blur_red_and_each_other():
    colours = [SHARP, BLURRED, *ROI_COLOURS]
    for a, b in itertools.combinations(colours, 2):
        assert np.linalg.norm(_lab(a) - _lab(b)) > 40, (a, b)


CORNERED = [  # four aspects sharing the top-left and bottom-left corners, as crops often do
    Roi("16:9", (0, 0, 320, 180), 0.0, True, 1.0, True),
    Roi("4:3", (0, 0, 240, 180), 0.2, False, 0.75, True),
    Roi("1:1", (0, 0, 180, 180), 0.0, True, 0.56, True),
    Roi("2:3", (0, 0, 120, 180), 0.2, False, 0.38, True),
]
FACES = [
    Region("face", "face_0", (10, 10, 60, 60), 0.04, 0.0, 0.1, 0.0, "sharp"),
    Region("face", "face_1", (12, 14, 58, 64), 0.04, 0.4, 0.7, 0.3, "blurred"),
    Region("component", "component_0", (0, 100, 320, 180), 0.25, 1.0, 0.9, 0.3, "blurred"),
]


@pytest.mark.parametrize(("shape", "scale"), [((180, 320, 3), 0.4), ((180, 320, 3), 0.8), ((90, 160, 3), 0.4)])
def test_labels_and_legend_never_overlap_and_stay_inside(shape, scale):
    legend, labels = layout(shape, FACES, CORNERED, font_scale=scale)
    boxes = [label.box for label in labels] + ([legend.box] if legend else [])
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
    if shape[0] >= 180 and scale == 0.4:  # room for everything: nothing is left out
        assert legend is not None and len(labels) == 6


def test_the_legend_names_what_each_colour_means():
    legend, _ = layout((360, 640, 3), FACES, CORNERED)
    assert [text for _, text in legend.lines] == [
        "blurred",
        "sharp face",
        "16:9 crop",
        "4:3 crop",
        "1:1 crop",
        "2:3 crop",
    ]
    assert [c for c, _ in legend.lines][2:] == list(aspect_colours(CORNERED).values())
    out = draw_boxes(np.full((360, 640, 3), 128, np.uint8), FACES, CORNERED)
    x0, y0, x1, y1 = legend.box
    band = out[y0:y1, x0:x1].reshape(-1, 3)
    for colour, _ in legend.lines:  # each swatch is painted in the legend's band
        assert (np.abs(band.astype(int) - colour) <= 5).all(axis=1).sum() >= 9, colour
    assert legend.box[1] == 360 - (y1 - y0) and legend.box[0] == 0  # bottom-left first
