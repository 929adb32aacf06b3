"""infra/docker/Dockerfile.cuda and Dockerfile.cpu, .dockerignore and the image scripts,
checked without Docker: stages, pins, user, weights, health check, entry point, and that
everything they copy exists in the build context and is not ignored by it.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.infra_files import (
    DOCKER_DIR,
    DOCKERFILES,
    ROOT,
    Instruction,
    Stage,
    dockerignore_patterns,
    flags_and_words,
    is_dockerignored,
    makefile_pins,
    pins_in,
    pyproject_pins,
    qc_command_problem,
    read_dockerfile,
    stages_of,
)

KINDS = sorted(DOCKERFILES)
WEIGHTS = "qc_worker/weights/detector.safetensors"
IGNORE = dockerignore_patterns()


def _stages(kind: str) -> list[Stage]:
    return stages_of(read_dockerfile(DOCKERFILES[kind]))


def _final(kind: str) -> Stage:
    return _stages(kind)[-1]


def _global_args(kind: str) -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    args: dict[str, str] = {}
    for ins in read_dockerfile(DOCKERFILES[kind]):
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            args[key.strip()] = value.strip().strip('"')
    return args


def _resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def _copies(stage: Stage) -> list[tuple[dict[str, str], list[str], Instruction]]:
    out = []
    for ins in stage.instructions:
        if ins.keyword in ("COPY", "ADD"):
            flags, words = flags_and_words(ins.args)
            out.append((flags, words, ins))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile_exists_and_is_multi_stage(kind: str) -> None:
    assert DOCKERFILES[kind].is_file()
    stages = _stages(kind)
    assert len(stages) >= 2, f"{kind}: build in one stage, run in another"
    names = [s.name for s in stages if s.name]
    assert len(names) == len(set(names)), f"{kind}: duplicate stage names {names}"


@pytest.mark.parametrize("kind", KINDS)
def test_copy_from_names_an_earlier_stage(kind: str) -> None:
    seen: list[str] = []
    uses = 0
    for stage in _stages(kind):
        for flags, _words, ins in _copies(stage):
            if "from" in flags:
                uses += 1
                assert flags["from"] in seen, (
                    f"{kind} line {ins.line}: COPY --from={flags['from']} names no earlier "
                    f"stage (stages so far: {seen})"
                )
        if stage.name:
            seen.append(stage.name)
    assert uses, f"{kind}: the runtime stage should copy the build from a builder stage"
    assert any("from" in flags for flags, _, _ in _copies(_final(kind)))


@pytest.mark.parametrize("kind", KINDS)
def test_base_images(kind: str) -> None:
    args = _global_args(kind)
    bases = [_resolve(s.base, args) for s in _stages(kind)]
    names = {s.name for s in _stages(kind) if s.name}
    external = [b for b in bases if b not in names]
    if kind == "cuda":
        assert all(re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", b) for b in external), external
    else:
        assert all(b.startswith("python:3.11-slim") for b in external), external


# --- torch pins ----------------------------------------------------------------------------


def test_pyproject_and_makefile_pin_the_same_torch() -> None:
    assert pyproject_pins() == makefile_pins()
    assert set(pyproject_pins()) == {"torch", "torchvision"}


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile_pins_the_same_torch_as_pyproject(kind: str) -> None:
    pins = pins_in(DOCKERFILES[kind].read_text(encoding="utf-8"))
    expected = {name: {version} for name, version in pyproject_pins().items()}
    assert pins == expected, f"{kind}: {pins} != pyproject.toml {expected}"


@pytest.mark.parametrize("kind", KINDS)
def test_torch_is_installed_before_the_project(kind: str) -> None:
    for stage in _stages(kind):
        runs = stage.instructions
        torch_at = [i for i, ins in enumerate(runs) if ins.keyword == "RUN" and "torch==" in ins.args]
        if not torch_at:
            continue
        project_at = [
            i
            for i, ins in enumerate(runs)
            if ins.keyword in ("COPY", "ADD") and re.search(r"\bpyproject\.toml\b|\bqc_worker\b", ins.args)
        ]
        assert project_at and torch_at[0] < project_at[0], (
            f"{kind}: torch must be installed (its own layer) before the project is copied in"
        )
        installs = [
            ins.args for ins in runs if ins.keyword == "RUN" and re.search(r"pip install[^&]* \.(\s|$)", ins.args)
        ]
        assert installs, f"{kind}: the project is not pip-installed from the context"
        assert not any(" -e " in a or "--editable" in a for a in installs), f"{kind}: editable install"
        return
    pytest.fail(f"{kind}: no RUN installs torch==")


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile_installs_the_face_nets_of_the_makefile_without_their_deps(kind: str) -> None:
    """facenet-pytorch's metadata pins torch 2.2: installed with its deps it would replace
    the image's torch, and without it screening has no face detector."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    [pin] = [ln.split(":=", 1)[1].strip() for ln in text.splitlines() if ln.startswith("FACE_PINS")]
    assert re.fullmatch(r"facenet-pytorch==[0-9.]+", pin), pin
    runs = [ins.args for stage in _stages(kind) for ins in stage.instructions if ins.keyword == "RUN"]
    assert any(re.search(rf"pip install --no-deps {re.escape(pin)}(\s|$)", r) for r in runs), (
        f"{kind}: no RUN installs {pin} with --no-deps"
    )
    assert any("load_face_detector()" in r for r in runs), f"{kind}: the build does not load the face nets"


# --- user, weights, health, entry point -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_runs_as_a_non_root_user(kind: str) -> None:
    users = [ins.args.split()[0] for ins in _final(kind).instructions if ins.keyword == "USER"]
    assert users, f"{kind}: the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{kind}: runs as {users[-1]}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_shipped_weights_are_in_the_image(kind: str) -> None:
    assert (ROOT / WEIGHTS).is_file()
    assert not is_dockerignored(WEIGHTS, IGNORE), f".dockerignore leaves out {WEIGHTS}"
    stages = _stages(kind)
    copied = [w for st in stages for _, words, _ in _copies(st) for w in words[:-1]]
    assert "qc_worker" in copied, f"{kind}: qc_worker/ (with weights/) is not copied in"
    text = DOCKERFILES[kind].read_text(encoding="utf-8")
    assert "weights/detector.safetensors" in text, f"{kind}: nothing checks the installed weights"
    final_runs = " ".join(ins.args for ins in _final(kind).instructions if ins.keyword == "RUN")
    assert "SHIPPED_CHECKPOINT" in final_runs and "load_checkpoint" in final_runs, (
        f"{kind}: the runtime stage should load the shipped checkpoint at build time"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_the_migrations_go_beside_the_package(kind: str) -> None:
    copied = [w for st in _stages(kind) for _, words, _ in _copies(st) for w in words[:-1]]
    assert "migrations" in copied
    text = DOCKERFILES[kind].read_text(encoding="utf-8")
    assert 'cp -r migrations "${site_packages}/migrations"' in text
    assert "qc_worker.db.migrate import head" in text


@pytest.mark.parametrize("kind", KINDS)
def test_healthcheck_and_entrypoint(kind: str) -> None:
    final = _final(kind)
    by_keyword: dict[str, list[Instruction]] = {}
    for ins in final.instructions:
        by_keyword.setdefault(ins.keyword, []).append(ins)
    assert "HEALTHCHECK" in by_keyword, f"{kind}: no HEALTHCHECK"
    assert "qc-healthcheck" in by_keyword["HEALTHCHECK"][-1].args
    assert by_keyword["ENTRYPOINT"][-1].args == '["qc-entrypoint"]'
    installed = {words[-1]: words[0] for _, words, _ in _copies(final) if len(words) == 2}
    assert installed.get("/usr/local/bin/qc-entrypoint") == "infra/docker/entrypoint.sh"
    assert installed.get("/usr/local/bin/qc-healthcheck") == "infra/docker/healthcheck.sh"


@pytest.mark.parametrize("kind", KINDS)
def test_default_command_is_a_real_qc_command(kind: str) -> None:
    import json

    cmd = json.loads([ins for ins in _final(kind).instructions if ins.keyword == "CMD"][-1].args)
    problem = qc_command_problem(cmd)
    assert problem is None, f"{kind}: {problem}"


@pytest.mark.parametrize("kind", KINDS)
def test_everything_copied_exists_and_is_in_the_build_context(kind: str) -> None:
    for stage in _stages(kind):
        for flags, words, ins in _copies(stage):
            if "from" in flags:
                continue
            for source in words[:-1]:
                matches = glob.glob(str(ROOT / source))
                assert matches, f"{kind} line {ins.line}: {source} does not exist"
                rel = os.path.relpath(matches[0], ROOT)
                assert not is_dockerignored(rel, IGNORE), f"{kind}: .dockerignore leaves out {rel}"


# --- scripts and .dockerignore -------------------------------------------------------------------


@pytest.mark.parametrize("script", ["entrypoint.sh", "healthcheck.sh"])
def test_scripts_are_executable_posix_shell(script: str) -> None:
    path = DOCKER_DIR / script
    assert path.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert os.access(path, os.X_OK), f"{path} is not executable"
    subprocess.run(["sh", "-n", str(path)], check=True)


def test_entrypoint_execs_its_command(tmp_path: Path) -> None:
    assert 'exec "$@"' in (DOCKER_DIR / "entrypoint.sh").read_text(encoding="utf-8")
    fake_qc = tmp_path / "qc"
    fake_qc.write_text('#!/bin/sh\necho "qc $*"\n')
    fake_qc.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}

    def run(*args: str) -> str:
        done = subprocess.run(
            ["sh", str(DOCKER_DIR / "entrypoint.sh"), *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert run("qc", "beat") == "qc beat"
    assert run("worker", "--concurrency", "1") == "qc worker --concurrency 1"
    assert run("--help") == "qc --help"
    assert run("echo", "plain") == "plain"


def test_healthcheck_passes_without_a_metrics_port() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QC_METRICS_PORT"}
    subprocess.run(["sh", str(DOCKER_DIR / "healthcheck.sh")], env=env, check=True)


def test_healthcheck_fails_when_the_metrics_port_does_not_answer() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "QC_METRICS_PORT": str(port)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the script runs `python`
    done = subprocess.run(
        ["sh", str(DOCKER_DIR / "healthcheck.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "unhealthy" in done.stderr


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "runs/r18/best_model.pt",
        "out/demo-overlays/a.png",
        ".git/HEAD",
        ".env",
        ".pytest_cache/v",
        "qc_worker/__pycache__/cli.cpython-311.pyc",
        ".ruff_cache/x",
    ],
)
def test_dockerignore_leaves_out(path: str) -> None:
    assert is_dockerignored(path, IGNORE), f".dockerignore should leave out {path}"


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "qc_worker/cli/__init__.py",
        WEIGHTS,
        "model_training/cli.py",
        "migrations/env.py",
        "infra/docker/entrypoint.sh",
        "infra/docker/healthcheck.sh",
    ],
)
def test_dockerignore_keeps(path: str) -> None:
    assert not is_dockerignored(path, IGNORE), f".dockerignore must not leave out {path}"
