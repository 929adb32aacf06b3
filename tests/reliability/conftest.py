"""Fixtures of the reliability suite, and its ``--soak`` option.

``pytest tests/reliability --soak`` runs the load test at soak size (20 000 images, 4
worker processes) and writes its figures to BENCHMARKS.md; without it the load test runs
at CI size. (The option is defined here, so name this folder, or a file in it, on the
command line when passing it.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import tiny_checkpoint
from tests.workers import QueueEnv

# moto's server logs every request it serves; thousands of lines hide a failure.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="reliability suite: run the load test at soak size and write BENCHMARKS.md",
    )
    parser.addoption(
        "--soak-images",
        type=int,
        default=20_000,
        help="images the --soak load test screens (default 20 000)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A soak runs for as long as it takes, past the suite's usual per-test timeout."""
    if config.getoption("soak", default=False):
        for item in items:
            if item.path.name == "test_queue_load.py":
                item.add_marker(pytest.mark.timeout(6 * 3600))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=7)


@pytest.fixture
def rel_env(make_env, s3_endpoint, s3_bucket, tiny_model) -> Iterator[QueueEnv]:
    """A deployment on the session's S3 endpoint (see :func:`fast_screening`)."""
    env = make_env(s3_endpoint.url, s3_bucket)
    fast_screening(env, tiny_model)
    yield env


def fast_screening(env: QueueEnv, model: Path) -> None:
    """Workers run the tiny model on one torch thread each (two processes share the two
    CI cores), with the cheaper face and crop searches: the suite is about the queue, not
    the detector, and this keeps an image near 50 ms of CPU."""
    env.extra.update(
        {
            "QC_MODEL_PATH": str(model),
            "OMP_NUM_THREADS": "1",
            "QC_FACES__PROFILE": "never",
            "QC_ROI__SCALES": "4",
            "QC_ROI__POSITIONS": "9",
        }
    )
