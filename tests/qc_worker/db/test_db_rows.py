"""Typed values to rows (qc_worker.db.rows): one mapping, checked against the tables."""

from __future__ import annotations

import numpy as np
import pytest

from qc_worker.db.models import BlurRegion, CropRoi, Image
from qc_worker.db.rows import columns
from qc_worker.detector.regions import Region, analyse_regions
from qc_worker.detector.roi import Roi, crop_safe_rois
from qc_worker.values import ImageOrigin
from qc_worker.vocabulary import RegionKind, RegionVerdict, SourceKind


def _table_columns(model: type) -> set[str]:
    return {c.name for c in model.__table__.columns} - {"id", "screening_id"}


def test_every_field_of_a_value_is_a_column_of_its_table():
    prob = np.zeros((60, 80), np.float32)
    prob[10:30, 10:30] = 0.9
    report = analyse_regions(prob, np.full_like(prob, 0.5), 0.5, faces=[(5, 5, 35, 35)])
    region_rows = [columns(r) for r in report.regions]
    assert {frozenset(row) for row in region_rows} == {frozenset(_table_columns(BlurRegion))}
    roi_rows = [columns(r) for r in crop_safe_rois(prob, 0.5)]
    assert {frozenset(row) for row in roi_rows} == {frozenset(_table_columns(CropRoi))}
    origin = columns(ImageOrigin(SourceKind.FRAME, title_id=1, timestamp_s=2.5))
    assert set(origin) < set(_table_columns(Image))
    assert origin == {
        "source_kind": "frame",
        "title_id": 1,
        "video_id": None,
        "job_id": None,
        "timestamp_s": 2.5,
        "frame_index": None,
        "vendor": None,
    }


def test_numpy_numbers_become_the_plain_types_the_drivers_take():
    region = Region(
        RegionKind.FACE,
        "face_0",
        (np.int32(1), np.int64(2), np.int32(30), np.int64(40)),
        np.float32(0.25),
        np.float64(0.5),
        np.float32(0.75),
        np.float32(0.0),
        "blurred",
        np.float32(0.5),
    )
    row = columns(region)
    assert row == {
        "kind": "face",
        "label": "face_0",
        "x0": 1,
        "y0": 2,
        "x1": 30,
        "y1": 40,
        "area_fraction": 0.25,
        "coverage": 0.5,
        "mean_probability": 0.75,
        "mean_intensity": 0.0,
        "verdict": RegionVerdict.BLURRED,
        "confidence": 0.5,
    }
    assert all(type(row[k]) is int for k in ("x0", "y0", "x1", "y1"))
    assert type(row["area_fraction"]) is float and type(row["confidence"]) is float
    assert row["verdict"] is RegionVerdict.BLURRED
    roi = columns(Roi("16:9", (0, 0, 16, 9), np.float32(0.0), np.bool_(True), 1.0, np.bool_(False)))
    assert roi["safe"] is True and roi["keeps_faces"] is False and roi["reason"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Roi("16:9", (0, 0, 16, 9), 0.0, "yes", 1.0, True), "rois.safe must be a bool"),
        (Roi("16:9", (0, -1, 16, 9), 0.0, True, 1.0, True), "negative corner"),
        (Roi("16:9", (0, 0, 16), 0.0, True, 1.0, True), "4 values"),
        (Roi(" ", (0, 0, 16, 9), 0.0, True, 1.0, True), "aspect must be a non-empty string"),
        (ImageOrigin(frame_index=2.5), "frame_index must be a whole number"),
        (ImageOrigin(timestamp_s=float("inf")), "timestamp_s must be finite"),
    ],
)
def test_what_a_type_cannot_promise_is_refused_by_name(value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        columns(value, "rois" if isinstance(value, Roi) else None)
