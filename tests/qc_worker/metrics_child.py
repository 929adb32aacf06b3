"""Runs in the spawned children of tests/qc_worker/test_metrics.py, recording like a prefork
pool process would. Kept apart from the test module so a child does not import torch."""

from __future__ import annotations

from types import SimpleNamespace

from qc_worker.metrics import record_outcome, record_task


def record(verdict: str, screened: int, failures: int) -> None:
    # Outcome's fields that record_outcome reads (qc_worker.pipeline would import torch).
    for _ in range(screened):
        record_outcome(
            SimpleNamespace(
                status="screened", verdict=verdict, reason=None, failure_kind=None, timings={"detect": 0.02}
            )
        )
    for _ in range(failures):
        record_outcome(
            SimpleNamespace(
                status="failed", verdict=None, reason="file is empty (0 bytes)", failure_kind=None, timings={}
            )
        )
    record_task("qc.screen_images", "succeeded", 3.0)
