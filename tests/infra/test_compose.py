"""docker-compose.yml and .env.example, checked without Docker.

The file is parsed with PyYAML (anchors and merge keys resolved, as compose does) and
interpolated from .env.example. What it must get right: every service is an image or a
build of an existing Dockerfile; every ``qc ...`` it runs parses as a command of the real
typer app ``qc_worker.cli:app``; every ``QC_`` name is a Settings field; the variables it
interpolates are documented; ordering waits on health or completion; the qc processes get
the database, broker and S3 settings, and those settings validate.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from qc_worker.config import Settings
from tests.infra.infra_files import (
    COMPOSE_FILE,
    DOCKERFILES,
    ENV_EXAMPLE,
    QC_NAME,
    build_paths,
    command_of,
    env_files_of,
    environment_of,
    interpolate,
    interpolate_tree,
    is_qc_service,
    load_compose,
    qc_command_problem,
    read_env_file,
    settings_env_problem,
    variable_uses,
)

COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ENV_EXAMPLE_FILE = read_env_file(ENV_EXAMPLE)
# What `docker compose` sees when .env is a copy of .env.example.
COMPOSE_ENV = dict(ENV_EXAMPLE_FILE.values)
QC_SERVICES = sorted(name for name, svc in SERVICES.items() if is_qc_service(svc))

EXPECTED_SERVICES = {
    "redis",
    "postgres",
    "minio",
    "minio-init",
    "migrate",
    "worker-gpu",
    "worker-cpu",
    "beat",
    "flower",
}
ONE_SHOT = {"minio-init", "migrate"}
NEEDS_HEALTHCHECK = {"redis", "postgres", "minio", "worker-gpu", "worker-cpu"}
# What every qc process must be told explicitly (not only through .env).
QC_REQUIRED_ENV = {
    "QC_DATABASE_URL",
    "QC_REDIS_URL",
    "QC_S3_ENDPOINT_URL",
    "QC_S3_REGION",
    "QC_S3_BUCKET",
    "QC_S3_ACCESS_KEY_ID",
    "QC_S3_SECRET_ACCESS_KEY",
}


def _healthcheck_enabled(service: dict[str, Any]) -> bool:
    hc = service.get("healthcheck")
    return bool(hc) and not hc.get("disable", False) and hc.get("test") not in (["NONE"], "NONE")


# --- services -------------------------------------------------------------------------------


def test_the_stack_has_its_services() -> None:
    assert set(SERVICES) == EXPECTED_SERVICES
    assert set(QC_SERVICES) == {"migrate", "worker-gpu", "worker-cpu", "beat"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_a_build_of_an_existing_dockerfile(name: str) -> None:
    service = SERVICES[name]
    assert "image" in service or "build" in service, f"{name}: neither image nor build"
    if "build" in service:
        context, dockerfile = build_paths(service)
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"


def test_the_workers_are_built_from_the_cuda_and_the_cpu_dockerfile() -> None:
    assert build_paths(SERVICES["worker-gpu"])[1] == DOCKERFILES["cuda"].resolve()
    for name in ("worker-cpu", "beat", "migrate"):
        assert build_paths(SERVICES[name])[1] == DOCKERFILES["cpu"].resolve(), name


# --- qc commands ----------------------------------------------------------------------------


def test_the_command_check_refuses_what_qc_would_refuse() -> None:
    assert qc_command_problem(["qc", "db", "upgrade"]) is None
    assert qc_command_problem(["qc", "no-such-command"]) is not None
    assert qc_command_problem(["qc", "db"]) is not None  # a group, not a command
    assert qc_command_problem(["qc", "db", "upgrade", "--no-such-option"]) is not None


@pytest.mark.parametrize("name", QC_SERVICES)
def test_qc_commands_are_commands_of_the_real_cli(name: str) -> None:
    argv = [interpolate(word, COMPOSE_ENV) for word in command_of(SERVICES[name])]
    problem = qc_command_problem(argv)
    assert problem is None, f"service {name}: {problem}"


def test_no_other_service_runs_qc() -> None:
    for name, service in SERVICES.items():
        if name not in QC_SERVICES:
            assert "qc" not in command_of(service)[:1], f"{name} runs qc but builds no image"


# --- QC_ names and the variables compose interpolates ---------------------------------------


def test_every_qc_name_in_the_compose_file_is_a_settings_field() -> None:
    names = set(QC_NAME.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    for service in SERVICES.values():
        names |= {k for k in environment_of(service) if k.startswith("QC_")}
    assert names, "no QC_ variables found at all"
    problems = [p for p in map(settings_env_problem, sorted(names)) if p]
    assert not problems, "\n".join(problems)


def test_every_qc_name_in_env_example_is_a_settings_field() -> None:
    names = set(QC_NAME.findall(ENV_EXAMPLE_FILE.text)) | {k for k in ENV_EXAMPLE_FILE.mentioned if k.startswith("QC")}
    problems = [p for p in map(settings_env_problem, sorted(names)) if p]
    assert not problems, "\n".join(problems)


def test_env_example_documents_every_variable_compose_interpolates() -> None:
    uses = variable_uses(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert uses
    undocumented = sorted({u.name for u in uses} - ENV_EXAMPLE_FILE.mentioned)
    assert not undocumented, f"used in docker-compose.yml, missing from .env.example: {undocumented}"
    # A variable used without a default must be set (not just shown commented out).
    unset = sorted({u.name for u in uses if not u.has_default} - set(ENV_EXAMPLE_FILE.values))
    assert not unset, f"needed without a default but not set in .env.example: {unset}"


def test_env_example_secrets_are_placeholders() -> None:
    secret = re.compile(r"PASSWORD|SECRET|AUTH", re.IGNORECASE)
    for key, value in ENV_EXAMPLE_FILE.values.items():
        if secret.search(key):
            assert "CHANGE-ME" in value, f".env.example: {key} should be a CHANGE-ME placeholder"


def test_the_compose_file_holds_no_literal_secret() -> None:
    sensitive = re.compile(r"PASSWORD|SECRET|_KEY$|KEY_ID|TOKEN|AUTH", re.IGNORECASE)
    url_password = re.compile(r"://[^/@\s]*:([^@/\s]+)@")
    for name, service in SERVICES.items():
        for key, value in environment_of(service).items():
            if sensitive.search(key) and value:
                assert value.startswith("${"), f"{name}: {key} must come from .env, not the file"
            for password in url_password.findall(value):
                assert password.startswith("${"), f"{name}: {key} has a literal password"
        words = command_of(service)
        for i, word in enumerate(words[:-1]):
            if word == "--requirepass":
                assert words[i + 1].startswith("${"), f"{name}: literal --requirepass"


# --- ordering and health ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NEEDS_HEALTHCHECK))
def test_health_checks(name: str) -> None:
    assert _healthcheck_enabled(SERVICES[name]), f"{name} has no health check"


def test_worker_health_checks_have_a_metrics_port_to_ask() -> None:
    for name in ("worker-gpu", "worker-cpu"):
        service = SERVICES[name]
        assert service["healthcheck"]["test"] == ["CMD", "qc-healthcheck"], name
        port = environment_of(service).get("QC_METRICS_PORT")
        assert port and port.isdigit(), f"{name}: qc-healthcheck needs QC_METRICS_PORT"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if s.get("depends_on")))
def test_depends_on_waits_for_health_or_completion(name: str) -> None:
    depends = SERVICES[name]["depends_on"]
    assert isinstance(depends, dict), f"{name}: use the long depends_on form with conditions"
    for target, spec in depends.items():
        assert target in SERVICES, f"{name} depends on unknown service {target}"
        condition = (spec or {}).get("condition", "service_started")
        if target in ONE_SHOT:
            expected = "service_completed_successfully"
        elif _healthcheck_enabled(SERVICES[target]):
            expected = "service_healthy"
        else:
            expected = condition
        assert condition == expected, f"{name} -> {target}: {condition}, want {expected}"


def test_workers_and_beat_wait_for_the_migration_and_the_broker() -> None:
    for name in ("worker-gpu", "worker-cpu", "beat"):
        depends = SERVICES[name]["depends_on"]
        assert {"migrate", "redis"} <= set(depends), name
    for name in ("worker-gpu", "worker-cpu"):
        assert "minio-init" in SERVICES[name]["depends_on"], f"{name} must wait for the bucket"
    assert "postgres" in SERVICES["migrate"]["depends_on"]


def test_one_shot_services_are_not_restarted() -> None:
    for name in ONE_SHOT:
        assert str(SERVICES[name].get("restart", "no")) == "no", name


# --- what the qc processes are told ------------------------------------------------------------


@pytest.mark.parametrize("name", QC_SERVICES)
def test_qc_services_get_database_broker_and_s3_settings(name: str) -> None:
    service = SERVICES[name]
    assert ".env" in env_files_of(service), f"{name}: env_file .env missing"
    missing = QC_REQUIRED_ENV - set(environment_of(service))
    assert not missing, f"{name}: environment lacks {sorted(missing)}"


@pytest.mark.parametrize("name", QC_SERVICES)
def test_qc_service_settings_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With .env copied from .env.example, each qc process gets valid Settings."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("QC_"):
            monkeypatch.delenv(key)
    service = interpolate_tree(SERVICES[name], COMPOSE_ENV)
    env = {**ENV_EXAMPLE_FILE.values, **environment_of(service)}  # environment: wins
    for key, value in env.items():
        if key.startswith("QC_"):
            monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.database_url.startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in settings.database_url
    assert settings.redis_url.startswith("redis://") and "@redis:6379/" in settings.redis_url
    assert settings.redis_key_prefix == ""
    assert settings.storage_kind == "s3"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None
    if name == "worker-gpu":
        assert settings.device == "cuda"
    if name.startswith("worker-"):
        assert settings.prefetch_multiplier == 1
        assert settings.metrics_port is not None
    if name == "beat":
        assert str(settings.beat_schedule_path).startswith("/var/lib/qc/beat/")


def test_the_gpu_worker_reserves_one_nvidia_gpu_and_runs_one_task() -> None:
    service = SERVICES["worker-gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cmd = command_of(service)
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    env = environment_of(service)
    assert env["QC_DEVICE"] == "cuda" and env["QC_PREFETCH_MULTIPLIER"] == "1"


def test_the_cpu_worker_runs_on_the_cpu() -> None:
    env = environment_of(SERVICES["worker-cpu"])
    assert env["QC_DEVICE"] == "cpu" and env["QC_PREFETCH_MULTIPLIER"] == "1"
    assert "OMP_NUM_THREADS" in env


def test_beat_keeps_its_schedule_in_a_volume() -> None:
    beat = SERVICES["beat"]
    path = environment_of(beat)["QC_BEAT_SCHEDULE_PATH"]
    mounts = [v.split(":")[1] for v in beat["volumes"]]
    assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), (path, mounts)


# --- flower, ports, volumes -------------------------------------------------------------------------


def test_flower_watches_the_broker_the_workers_use() -> None:
    flower = SERVICES["flower"]
    assert flower["image"].startswith("mher/flower")
    broker = environment_of(flower)["CELERY_BROKER_URL"]
    for name in QC_SERVICES:
        env = environment_of(SERVICES[name])
        assert env["QC_REDIS_URL"] == broker, f"{name} and flower use different Redis URLs"
        assert env["QC_REDIS_KEY_PREFIX"] == "", f"{name}: Flower cannot see prefixed keys"


def test_ports_are_published_on_the_configured_address_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and (port.startswith(("${PUBLISH_ADDRESS", "127.0.0.1:"))), (
                f"{name}: port {port!r} is published on every address"
            )


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"
    assert {"pgdata", "miniodata"} <= declared
