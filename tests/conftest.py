"""Fixtures shared by every test package: the real PostgreSQL server's throwaway databases.

PostgreSQL is the server CI starts on 127.0.0.1:5432 (user ``postgres``, trust auth).
Through an AUTOCOMMIT connection to the ``test`` database, tests CREATE uniquely named
databases (``qc_test_<pid>_<random>``) and every one is DROPped (``WITH (FORCE)``) at the
end, so nothing depends on leftovers of earlier runs. When PostgreSQL does not answer,
tests that need it fail with a message saying so; they never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/test"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the ``test`` database, for CREATE/DROP DATABASE."""
    engine = create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL does not answer at {PG_HOST}:{PG_PORT} (user postgres, database "
            f"'test'): {exc.orig}. The database tests need the real server: start it "
            "(infra/ci/ensure-services.sh does) and run them again.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_databases(pg_admin: Engine) -> Iterator[tuple[Callable[[], str], Callable[[str], None]]]:
    """``(create, drop)``: make a uniquely named database (its URL), and drop one."""
    made: list[str] = []

    def create() -> str:
        name = f"qc_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop(url: str) -> None:
        name = make_url(url).database
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in made:
            made.remove(name)

    yield create, drop
    for name in list(made):
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- S3: moto's real HTTP server on loopback ------------------------------------------------
S3_ACCESS_KEY = "qc-test-access-key"
S3_SECRET_KEY = "qc-test-secret-key-never-logged"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Endpoint:
    """moto's S3 server in a thread of the test process, stoppable and restartable on the
    same port (its objects live in this process, so they survive a restart)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._factory = lambda: ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server = None

    def start(self) -> None:
        self._server = self._factory()
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    endpoint = S3Endpoint()
    endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> Iterator[str]:
    """A fresh, uniquely named bucket, emptied and deleted afterwards."""
    name = f"qc-test-{uuid.uuid4().hex[:16]}"
    client = s3_endpoint.client()
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


# --- Redis: the real server, one unique key prefix per test -----------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards. Fails (never skips)
    when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(
            f"Redis does not answer at {REDIS_URL}: {exc}. Start it "
            "(infra/ci/ensure-services.sh does) and run the tests again.",
            pytrace=False,
        )
    prefix = f"qc-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# --- isolated deployments for real-worker tests ----------------------------------------------
@pytest.fixture
def make_env(pg_databases, redis_prefix, tmp_path):
    """``make(s3_url, bucket, **fields)``: a migrated, isolated deployment (own database,
    Redis key prefix, local root) on the given S3 endpoint; databases dropped afterwards."""
    from qc_worker.db.migrate import upgrade
    from tests.workers import QueueEnv

    create, drop = pg_databases
    made: list[str] = []

    def make(s3_url: str, bucket: str, **fields):
        url = create()
        made.append(url)
        upgrade(url)
        root = tmp_path / f"root{len(made)}"
        root.mkdir()
        return QueueEnv(db_url=url, redis_prefix=redis_prefix, s3_url=s3_url, bucket=bucket, root=root, **fields)

    yield make
    for url in made:
        drop(url)


@pytest.fixture
def queue_env(make_env, s3_endpoint, s3_bucket):
    """One deployment on the session's S3 endpoint and a fresh bucket."""
    return make_env(s3_endpoint.url, s3_bucket)
