"""One vocabulary: every layer uses the same enumerations, defined once."""

import ast
from pathlib import Path

import numpy as np

from qc_worker import vocabulary
from qc_worker.celery_app import TASK_ROUTES, make_celery
from qc_worker.config import Settings
from qc_worker.db import models
from qc_worker.detector.regions import analyse_regions
from qc_worker.metrics import FAILURE_KINDS, TASK_STATES, failure_kind
from qc_worker.vocabulary import FailureKind, RegionKind, RegionVerdict, TaskName, Verdict


def test_the_database_enumerations_are_the_vocabularys_own():
    for name in ("Verdict", "RegionVerdict", "ImageStatus", "JobStatus", "JobItemStatus", "JobKind", "SourceKind"):
        assert getattr(models, name) is getattr(vocabulary, name), name
    verdict_column = models.Screening.__table__.c.verdict.type
    assert set(verdict_column.enums) == {v.value for v in Verdict}


def test_every_task_name_is_registered_and_routed():
    app = make_celery(Settings(_env_file=None))
    import qc_worker.tasks  # noqa: F401  (registers the tasks on the shared app)

    registered = {n for n in qc_worker.tasks.app.tasks if n.startswith("qc.")}
    assert registered == {t.value for t in TaskName}
    assert set(TASK_ROUTES) == registered
    assert app.conf.beat_schedule["nightly-rescan"]["task"] == TaskName.NIGHTLY_RESCAN


def test_regions_speak_the_vocabulary():
    prob = np.full((60, 80), 0.9, np.float32)
    report = analyse_regions(prob, np.zeros_like(prob), 0.5, faces=[(10, 10, 30, 30)])
    assert report.verdict is Verdict.REJECT
    assert {r.kind for r in report.regions} == {RegionKind.FACE, RegionKind.COMPONENT, RegionKind.GRID}
    assert {r.verdict for r in report.regions} == {RegionVerdict.BLURRED}
    assert report.to_dict()["regions"][0]["kind"] == "face"


def test_metrics_labels_come_from_the_vocabulary():
    assert FAILURE_KINDS == tuple(k.value for k in FailureKind)
    assert TASK_STATES == ("succeeded", "retried", "failed")
    assert failure_kind("file is empty") is FailureKind.DECODE
    assert failure_kind("something new") is FailureKind.OTHER


def test_the_vocabulary_imports_nothing_of_the_project():
    tree = ast.parse(Path(vocabulary.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("qc_worker")]
