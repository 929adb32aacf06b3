"""The Celery task layer: what happens in the parent before the fork, the retry policy,
and `qc beat` starting for real."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy.exc import OperationalError

from qc_worker import flows
from qc_worker.storage import StorageError, TransientStorageError


def test_importing_the_tasks_touches_no_cuda_and_loads_no_model():
    """A forked child cannot re-initialise CUDA, and the model must load per child: the
    parent that imports the app must do neither."""
    code = (
        "import torch, qc_worker.tasks as t\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised in the parent'\n"
        "assert t._context is None, 'worker context built at import'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientStorageError("endpoint down"), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (ConnectionError("redis"), True),
        (flows.ModelMismatch("other model"), True),
        (StorageError("NoSuchKey"), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_errors_are_retried_and_input_errors_are_not(exc, transient):
    assert flows.is_transient(exc) is transient


@pytest.mark.integration
def test_qc_beat_starts_with_the_nightly_schedule(tmp_path, redis_prefix):
    env = {
        "PATH": "/usr/bin:/bin",
        "QC_REDIS_KEY_PREFIX": redis_prefix,
        "QC_RESCAN_AT": "04:30",
        "QC_BEAT_SCHEDULE_PATH": str(tmp_path / "beat-state"),
        "QC_LOG_LEVEL": "DEBUG",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "qc_worker.cli", "beat"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob("beat-state*")):
            time.sleep(0.2)
        assert list(tmp_path.glob("beat-state*")), "beat wrote no schedule state"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "beat: Starting" in out, out
    from qc_worker.celery_app import make_celery
    from qc_worker.config import Settings

    entry = make_celery(Settings(_env_file=None, rescan_at="04:30")).conf.beat_schedule["nightly-rescan"]
    assert entry["task"] == "qc.nightly_rescan" and entry["schedule"].hour == {4} and entry["schedule"].minute == {30}


def test_every_task_takes_celerys_retry_policy_from_the_settings():
    import qc_worker.tasks as tasks
    from qc_worker.config import get_settings

    settings = get_settings()
    for task in (tasks.extract_frames, tasks.screen_submission, tasks.plan_rescan, tasks.nightly_rescan):
        assert isinstance(task, tasks.QcTask)
        assert task.autoretry_for == flows.TRANSIENT and task.retry_backoff and task.retry_jitter
        assert (task.max_retries, task.retry_backoff_max) == (settings.retry_max, settings.retry_backoff_max_s)
        assert hasattr(task, "_orig_run")  # Celery wrapped run() with its autoretry
    # A chunk retries anything: its next run screens the items one by one.
    assert isinstance(tasks.screen_chunk, tasks.ChunkTask) and tasks.screen_chunk.autoretry_for == (Exception,)
