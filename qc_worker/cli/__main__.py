"""``python -m qc_worker.cli``: the ``qc`` command (the test harness starts workers so)."""

from qc_worker.cli import app

app()
