"""The one box renderer (qc_worker.overlay): what is drawn, in which colour, and the heat map."""

import numpy as np

from qc_worker.detector.regions import Region
from qc_worker.detector.roi import Roi
from qc_worker.overlay import BLURRED, SHARP, aspect_colours, draw_boxes, encode_overlay, render_overlay


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
