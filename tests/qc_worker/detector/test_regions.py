"""Blur regions and the image verdict (qc_worker.detector.regions)."""

import json

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from qc_worker.detector.faces import Foreground
from qc_worker.detector.regions import (
    Region,
    RegionConfig,
    analyse_regions,
    blur_components,
    grid_regions,
    image_verdict,
    semantic_regions,
)

T = 0.5


def _maps(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((h, w), 0.1, np.float32), np.zeros((h, w), np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_components_are_opencvs_with_their_stats(seed):
    """Components, boxes and areas are those of ``connectedComponentsWithStats`` (8-connected),
    largest first, on speckled maps with many touching and nested blobs."""
    rng = np.random.default_rng(seed)
    prob = cv2.GaussianBlur(rng.uniform(0, 1, (120, 160)).astype(np.float32), (0, 0), 2.0)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    intensity = rng.uniform(0, 1, prob.shape).astype(np.float32)
    comps = blur_components(prob, intensity, 0.6, min_area_fraction=0.0005, max_components=None)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= 0.6).view(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    expected = sorted((-int(areas[i]), i) for i in range(1, count) if areas[i] >= 0.0005 * prob.size)
    assert len(comps) == len(expected) > 3
    for comp, (_, i) in zip(comps, expected, strict=True):
        x, y, w, h, area = stats[i]
        assert comp.bbox == (x, y, x + w, y + h)
        assert comp.area_fraction == area / prob.size
        assert comp.mean_intensity == pytest.approx(float(intensity[labels == i].mean()), rel=1e-5)


def test_components_have_the_right_boxes_areas_and_means():
    prob, intensity = _maps(300, 400)
    prob[10:70, 20:120] = 0.8  # 60 x 100 = 6000 px
    intensity[10:70, 20:120] = 0.4
    prob[200:240, 300:330] = 0.6  # 40 x 30 = 1200 px
    prob[200:220, 300:330] = 1.0  # upper half stronger: mean 0.8
    intensity[200:240, 300:330] = 0.9
    prob[150, 150] = 0.99  # one pixel: below the minimum area
    comps = blur_components(prob, intensity, T, min_area_fraction=0.001)
    assert [c.bbox for c in comps] == [(20, 10, 120, 70), (300, 200, 330, 240)]
    assert [c.label for c in comps] == ["component_0", "component_1"]
    assert comps[0].area_fraction == pytest.approx(6000 / 120000)
    assert comps[1].area_fraction == pytest.approx(1200 / 120000)
    assert comps[0].mean_probability == pytest.approx(0.8)
    assert comps[1].mean_probability == pytest.approx(0.8)
    assert comps[0].mean_intensity == pytest.approx(0.4)
    assert comps[1].mean_intensity == pytest.approx(0.9)
    assert all(c.kind == "component" and c.verdict == "blurred" and c.coverage == 1 for c in comps)
    # With no minimum the single pixel is a component too, and max_components caps the list.
    assert len(blur_components(prob, intensity, T, min_area_fraction=0.0)) == 3
    assert len(blur_components(prob, intensity, T, 0.0, max_components=1)) == 1
    assert blur_components(*_maps(50, 50), T) == []


def test_diagonal_neighbours_join_one_component():
    prob, intensity = _maps(20, 20)
    for i in range(10):
        prob[i, i] = 0.9
    comps = blur_components(prob, intensity, T, min_area_fraction=0.0)
    assert len(comps) == 1 and comps[0].bbox == (0, 0, 10, 10)


def test_small_blurred_face_rejects_but_same_size_blurred_background_does_not():
    h, w = 800, 1000
    face = (450, 100, 550, 200)  # 100 x 100 = 10 000 px, 1.25 % of the image

    prob, intensity = _maps(h, w)
    prob[100:200, 450:550] = 0.9
    report = analyse_regions(prob, intensity, T, faces=[face])
    assert report.verdict == "reject"
    (face_region,) = report.of_kind("face")
    assert face_region.verdict == "blurred" and face_region.coverage == pytest.approx(1.0)
    assert report.worst_region == face_region
    assert report.score == 1.0
    assert any("face_0" in r for r in report.reasons)

    prob, intensity = _maps(h, w)
    prob[700:800, 0:120] = 0.9  # 12 000 px of background, more than the face
    report = analyse_regions(prob, intensity, T, faces=[face])
    assert report.verdict != "reject"
    assert report.of_kind("face")[0].verdict == "sharp"
    assert report.score < 1.0
    assert report.blurred_fraction == pytest.approx(12000 / 800000)


def test_partly_blurred_face_reviews_then_rejects_as_coverage_grows():
    prob, intensity = _maps(400, 400)
    face = (100, 100, 200, 200)
    prob[100:108, 100:200] = 0.9  # 8 % of the face: above review, below reject
    assert analyse_regions(prob, intensity, T, faces=[face]).verdict == "review"
    prob[100:120, 100:200] = 0.9  # 20 %
    assert analyse_regions(prob, intensity, T, faces=[face]).verdict == "reject"


def test_area_thresholds_without_faces():
    cfg = RegionConfig()
    prob, intensity = _maps(100, 100)
    assert analyse_regions(prob, intensity, T).verdict == "pass"
    assert analyse_regions(prob, intensity, T).worst_region is None
    prob[:, :45] = 0.7  # 45 % blurred
    report = analyse_regions(prob, intensity, T)
    assert report.verdict == "reject" and report.blurred_fraction == pytest.approx(0.45)
    prob, intensity = _maps(100, 100)
    prob[:, :20] = 0.6  # 20 %: review by area (mean probability 0.6 is not confident)
    report = analyse_regions(prob, intensity, T)
    assert report.verdict == "review"
    assert report.score == pytest.approx(0.2 / cfg.reject_area_fraction)
    assert report.worst_region.kind == "component"


def test_a_confident_component_reviews_and_an_unsure_one_passes():
    cfg = RegionConfig(grid_blur_limit=1.0)  # keep the grid rule out of this test
    prob, intensity = _maps(200, 200)
    prob[0:20, 0:40] = 0.95  # 2 % of the image
    assert analyse_regions(prob, intensity, T, config=cfg).verdict == "review"
    prob[0:20, 0:40] = 0.6
    assert analyse_regions(prob, intensity, T, config=cfg).verdict == "pass"


def test_grid_cell_statistics():
    prob, intensity = _maps(300, 300)
    prob[0:100, 0:100] = 0.9  # r0c0 all blurred
    intensity[0:100, 0:100] = 0.3
    prob[100:150, 100:200] = 0.7  # r1c1 half blurred
    intensity[100:150, 100:200] = 0.5
    cells = grid_regions(prob, intensity, T)
    assert [c.label for c in cells] == [f"r{r}c{c}" for r in range(3) for c in range(3)]
    by = {c.label: c for c in cells}
    assert by["r0c0"].bbox == (0, 0, 100, 100) and by["r2c1"].bbox == (100, 200, 200, 300)
    assert sum(c.area_fraction for c in cells) == pytest.approx(1.0)
    assert by["r0c0"].coverage == 1.0 and by["r0c0"].verdict == "blurred"
    assert by["r0c0"].mean_probability == pytest.approx(0.9)
    assert by["r0c0"].mean_intensity == pytest.approx(0.3)
    assert by["r1c1"].coverage == pytest.approx(0.5) and by["r1c1"].verdict == "blurred"
    assert by["r1c1"].mean_probability == pytest.approx((0.7 + 0.1) / 2)
    assert by["r1c1"].mean_intensity == pytest.approx(0.5)  # over its blurred pixels
    assert by["r2c2"].coverage == 0 and by["r2c2"].verdict == "sharp"
    assert by["r2c2"].mean_intensity == 0.0

    cells = grid_regions(*_maps(100, 250), T, RegionConfig(grid_rows=2, grid_cols=4))
    assert len(cells) == 8
    assert sum(c.area_fraction for c in cells) == pytest.approx(1.0)
    assert cells[-1].bbox[2:] == (250, 100)


def test_foreground_region_counts_only_its_mask():
    prob, intensity = _maps(100, 100)
    mask = np.zeros((100, 100), bool)
    mask[20:60, 20:60] = True  # 1600 px
    prob[20:40, 20:60] = 0.9  # 800 of them blurred
    prob[0:20, 0:20] = 0.9  # outside the mask
    fg = Foreground(box=(20, 20, 60, 60), mask=mask, source="saliency")
    (region,) = semantic_regions(prob, intensity, T, foreground=fg)
    assert region.kind == "foreground" and region.bbox == (20, 20, 60, 60)
    assert region.area_fraction == pytest.approx(0.16)
    assert region.coverage == pytest.approx(0.5) and region.verdict == "blurred"
    # A bare box works as well, and faces outside the image are skipped.
    regions = semantic_regions(prob, intensity, T, [(500, 500, 600, 600)], (0, 0, 20, 20))
    assert [r.kind for r in regions] == ["foreground"] and regions[0].coverage == 1.0


def test_report_to_dict_is_plain_json():
    prob, intensity = _maps(120, 160)
    prob[10:40, 10:40] = np.float32(0.9)
    intensity[10:40, 10:40] = np.float32(0.25)
    report = analyse_regions(prob, intensity, T, faces=[(10, 10, 40, 40)], foreground=(0, 0, 80, 80))
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["verdict"] == "reject" and d["worst_region"]["kind"] == "face"
    assert [r["kind"] for r in d["regions"]][:2] == ["face", "foreground"]
    assert {
        "kind",
        "label",
        "bbox",
        "area_fraction",
        "coverage",
        "mean_probability",
        "mean_intensity",
        "verdict",
    } == set(d["regions"][0])
    assert all(type(v) is float for v in (d["score"], d["blurred_fraction"]))


def test_image_verdict_on_hand_made_regions():
    face = Region("face", "face_0", (0, 0, 1, 1), 0.01, 0.2, 0.6, 0.1, "blurred")
    assert image_verdict([face], 0.01)[0] == "reject"
    assert image_verdict([], 0.0) == ("pass", 0.0, ())


def test_a_blurred_foreground_rejects_an_image_without_a_face_and_only_reviews_one_with_a_sharp_face():
    prob, intensity = _maps(400, 600)
    prob[50:150, 100:200] = 0.7  # a 100 x 100 subject, blurred on...
    prob[50:95, 100:200] = 0.1  # ...55 % of its pixels: 2.3 % of the image, too little for the other rules
    fg = (100, 50, 200, 150)
    faceless = analyse_regions(prob, intensity, T, foreground=fg)
    assert faceless.verdict == "reject"
    assert faceless.reasons == ("no face; foreground blurred 55% >= 40%",)
    assert faceless.score == 1.0
    sharp_face = analyse_regions(prob, intensity, T, faces=[(120, 55, 150, 90)], foreground=fg)
    assert sharp_face.verdict == "review" and sharp_face.reasons == ("foreground blurred 55% >= 30%",)
    milder = analyse_regions(prob, intensity, T, foreground=fg, config=RegionConfig(foreground_reject_limit=0.6))
    assert milder.verdict == "review" and milder.reasons == ("foreground blurred 55% >= 30%",)
    assert milder.score == pytest.approx(0.55 / 0.6)


def test_config_is_checked():
    with pytest.raises(ValidationError):
        RegionConfig(review_area_fraction=0.5, reject_area_fraction=0.4)
    with pytest.raises(ValidationError):
        RegionConfig(face_review_limit=0.3, face_blur_limit=0.2)
    with pytest.raises(ValidationError):
        RegionConfig(foreground_blur_limit=0.5, foreground_reject_limit=0.4)
    with pytest.raises(ValidationError):
        RegionConfig(grid_rows=0)
    with pytest.raises(ValueError):
        analyse_regions(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32), T)


def test_the_whole_frame_rule_reviews_a_frame_lifted_below_the_pixel_threshold():
    prob = np.full((90, 120), 0.2, np.float32)  # blur everywhere, no pixel over T
    intensity = np.zeros_like(prob)
    observable = np.ones(prob.shape, bool)
    off = analyse_regions(prob, intensity, T, observable=observable)
    assert off.verdict == "pass" and off.frame_median == pytest.approx(0.2)
    on = analyse_regions(prob, intensity, T, observable=observable, frame_threshold=0.15)
    assert on.verdict == "review" and on.score == off.score
    assert on.reasons == ("whole frame: median probability 0.20 >= 0.15",)
    assert on.to_dict()["frame_median"] == pytest.approx(0.2)
    assert analyse_regions(prob, intensity, T, observable=observable, frame_threshold=0.25).verdict == "pass"


def test_the_whole_frame_rule_weighs_observable_pixels_only_and_never_rejects():
    prob = np.full((90, 120), 0.02, np.float32)
    prob[:, :80] = 0.3  # two thirds of the frame lifted, but that part is flat
    intensity = np.zeros_like(prob)
    observable = np.zeros(prob.shape, bool)
    observable[:, 80:] = True
    report = analyse_regions(prob, intensity, T, observable=observable, frame_threshold=0.1)
    assert report.verdict == "pass" and report.frame_median == pytest.approx(0.02)
    flat = analyse_regions(
        np.full_like(prob, 0.3),
        intensity,
        T,
        observable=np.zeros(prob.shape, bool),
        min_observable_fraction=0.02,
        frame_threshold=0.1,
    )
    assert flat.verdict == "pass" and flat.frame_median == 0.0
    blurred = analyse_regions(
        np.full_like(prob, 0.9),
        intensity,
        T,
        observable=np.ones(prob.shape, bool),
        frame_threshold=0.1,
    )
    assert blurred.verdict == "reject" and any(r.startswith("whole frame") for r in blurred.reasons)


def test_the_whole_frame_rule_takes_the_highest_median_over_the_frame_scales():
    """A pan hidden by grain at full size shows on the half-size copy: its median counts."""
    prob = np.full((90, 120), 0.01, np.float32)
    intensity = np.zeros_like(prob)
    observable = np.ones(prob.shape, bool)
    report = analyse_regions(prob, intensity, T, observable=observable, frame_threshold=0.1, coarse_medians={0.5: 0.4})
    assert report.verdict == "review" and report.frame_median == pytest.approx(0.4)
    assert report.reasons == ("whole frame: median probability 0.40 at 0.5x size >= 0.10",)
    low = analyse_regions(prob, intensity, T, observable=observable, frame_threshold=0.1, coarse_medians={0.5: 0.05})
    assert low.verdict == "pass" and low.frame_median == pytest.approx(0.05)
