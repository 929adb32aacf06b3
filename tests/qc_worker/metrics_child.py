"""Runs in the spawned children of tests/qc_worker/test_metrics.py, recording like a prefork
pool process would. Kept apart from the test module so a child does not import torch."""

from __future__ import annotations

from qc_worker.metrics import record_outcome, record_task
from qc_worker.values import Outcome  # imports no torch, unlike the pipeline


def record(verdict: str, screened: int, failures: int) -> None:
    for i in range(screened):
        record_outcome(Outcome(f"{i}.jpg", "screened", verdict=verdict, timings={"detect": 0.02}))
    for i in range(failures):
        record_outcome(Outcome(f"bad-{i}.jpg", "failed", reason="file is empty (0 bytes)"))
    record_task("qc.screen_images", "succeeded", 3.0)
