"""`make test`'s prerequisite check for Chromium: on a machine without it (and without a way
to install it) it stops with a message that says what to do."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_machine_without_chromium_is_told_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "env"):  # no apt-get, no sudo on this PATH
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}")
    env = {"PATH": str(bin_dir), "QC_CHROMIUM_PATH": str(tmp_path / "no-chromium")}
    out = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "infra/ci/ensure-chromium.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "apt-get was not found: install Chromium yourself" in out.stderr and "no-chromium" in out.stderr


def test_a_machine_with_chromium_passes_the_check(tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho Chromium 1.0\n")
    fake.chmod(0o755)
    out = subprocess.run(
        ["bash", str(ROOT / "infra/ci/ensure-chromium.sh")],
        env={**os.environ, "QC_CHROMIUM_PATH": str(fake)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "Chromium 1.0 already at" in out.stdout
