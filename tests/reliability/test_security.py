"""Security properties of the job queue, each checked against the real thing.

1. A pickle payload on the queue is refused: the worker accepts JSON only, so a message
   whose content type is ``application/x-python-serialize`` is rejected unread. Shown on a
   real worker: it stays up, the payload's side effect never happens, the log says why,
   and a normal job afterwards completes.
2. No credentials in logs or rows: a job runs with distinctive S3 keys and a PostgreSQL
   password, JSON logs at DEBUG (botocore then logs its signed requests), with failing
   items and a task that blows up with a traceback; the whole worker log, every CLI output
   and every column of every table are searched for each secret in every spelling.
3. SQL only through bound parameters: a static check over qc_worker/ and migrations/
   fails on any SQL built by f-string, %-format, .format() or concatenation and passed to
   text() / execute() / exec_driver_sql(), except the documented, checked exceptions.
4. Local paths stay inside the configured roots (absolute paths elsewhere, ``..``,
   symlinks pointing out, unsafe S3 keys): covered through a real worker by
   tests/reliability/test_hostile_input.py; the store-level rule is checked here too.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from kombu import Connection, Producer
from sqlalchemy import MetaData, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from qc_worker.celery_app import make_celery
from qc_worker.db.models import JobStatus
from qc_worker.storage import LocalStore, StorageError, split_s3_uri
from tests.workers import QueueEnv, job_ids

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "images"


# --- fixtures (this module's own) ------------------------------------------------------------
@pytest.fixture
def security_env(queue_env: QueueEnv, tiny_model: Path) -> QueueEnv:
    queue_env.extra.update({"QC_MODEL_PATH": str(tiny_model), "OMP_NUM_THREADS": "1"})
    return queue_env


# --- 1. pickle on the queue ------------------------------------------------------------------
class _Payload:
    """Unpickling this creates ``path`` (``open(path, "w")``): proof that it was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _publish_raw(env: QueueEnv, body: bytes, content_type: str, task: str, args_repr: str) -> str:
    """Put one message straight onto the worker's ``screen`` queue, the way an attacker with
    access to Redis would: same key prefix, Celery's protocol-2 headers, a body of our choosing."""
    settings = env.settings()
    app = make_celery(settings)
    queue = app.amqp.queues["screen"]
    app.close()
    task_id = str(uuid.uuid4())
    transport = {
        "global_keyprefix": settings.redis_key_prefix,
        "visibility_timeout": settings.visibility_timeout_s,
    }
    with Connection(settings.redis_url, transport_options=transport) as conn:
        Producer(conn).publish(
            body,
            exchange=queue.exchange,
            routing_key="screen",
            declare=[queue],
            content_type=content_type,
            content_encoding="binary",
            headers={
                "lang": "py",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "eta": None,
                "expires": None,
                "argsrepr": args_repr,
                "kwargsrepr": "{}",
                "origin": "attacker@nowhere",
            },
        )
    return task_id


@pytest.mark.integration
@pytest.mark.slow
def test_a_pickle_message_is_refused_and_the_worker_goes_on(security_env: QueueEnv, s3_endpoint, tmp_path):
    env = security_env
    marker = tmp_path / "UNPICKLED-MARKER"
    body = pickle.dumps(((_Payload(marker), [1]), {}, {"callbacks": None, "errbacks": None, "chain": None}))
    # Sanity: this body really does create the file when unpickled.
    pickle.loads(body)
    assert marker.exists()
    marker.unlink()

    with env.worker() as worker:
        _publish_raw(env, body, "application/x-python-serialize", "qc.screen_chunk", "(pickle)")
        deadline = time.monotonic() + 60
        while "Refusing to deserialize" not in worker.log():
            assert time.monotonic() < deadline, f"the worker never refused the message:\n{worker.log()[-4000:]}"
            assert worker.proc.poll() is None, worker.log()[-4000:]
            time.sleep(0.2)
        time.sleep(2)  # time for any (wrong) second look at the message
        assert not marker.exists(), "the worker unpickled the payload"
        assert worker.proc.poll() is None

        # A normal job afterwards is served as usual.
        s3 = s3_endpoint.client()
        s3.upload_file(str(SAMPLES / "coffee.jpg"), env.bucket, "after/coffee.jpg")
        [job_id] = job_ids(env.qc("enqueue", "submission", "--vendor", "v", f"s3://{env.bucket}/after/").stdout)
        [job] = env.wait_jobs([job_id], worker=worker, timeout=120)
        assert job.status == JobStatus.DONE
        log = worker.log()
    assert not marker.exists()
    assert "application/x-python-serialize" in log and "untrusted content" in log
    # The refused message is gone (acknowledged, not redelivered or left in the queue).
    import redis

    client = redis.Redis.from_url(env.redis_url)
    assert client.llen(f"{env.redis_prefix}screen") == 0
    client.close()


# --- 2. no credentials in logs or rows -------------------------------------------------------
def _spellings(secret: str) -> set[str]:
    """A secret as it could appear: as is, URL-quoted, in a JSON string or a Python repr,
    and its distinctive middle on its own (a truncated or partly masked leak)."""
    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    middle = secret[len(secret) // 4 : len(secret) * 3 // 4]
    return forms | {middle}


@pytest.fixture
def pg_role(pg_admin) -> Iterator[Callable[[str], tuple[str, str]]]:
    """``make(database_url) -> (url with the role, password)``: a login role with a
    distinctive password, granted the tables of that database; dropped afterwards."""
    made: list[tuple[str, str]] = []

    def make(db_url: str) -> tuple[str, str]:
        name = f"qc_sec_{uuid.uuid4().hex[:10]}"
        password = f"pgPw!{uuid.uuid4().hex}~x"
        with pg_admin.connect() as c:
            c.exec_driver_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        made.append((name, db_url))
        admin = create_engine(db_url, poolclass=NullPool)
        with admin.begin() as c:
            c.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}")
            c.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}")
        admin.dispose()
        url = make_url(db_url).set(username=name, password=password).render_as_string(hide_password=False)
        return url, password

    yield make
    for name, db_url in made:
        admin = create_engine(db_url, poolclass=NullPool)
        with admin.begin() as c:  # its grants in that database go first
            c.exec_driver_sql(f"DROP OWNED BY {name}")
        admin.dispose()
        with pg_admin.connect() as c:
            c.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")


def _all_rows_text(url: str) -> dict[str, str]:
    """Every value of every table, as text, per table."""
    engine = create_engine(url, poolclass=NullPool)
    meta = MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as c:
        for name, table in meta.tables.items():
            out[name] = "\n".join(
                repr(tuple(row)) + json.dumps([str(v) for v in row]) for row in c.execute(select(table))
            )
    engine.dispose()
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_no_credentials_in_logs_cli_output_or_rows(security_env: QueueEnv, s3_endpoint, pg_role, tmp_path):
    env = security_env
    admin_url = env.db_url
    role_url, pg_password = pg_role(admin_url)
    key_id = f"QCKEYID{uuid.uuid4().hex[:12].upper()}"
    secret_key = f"qcSecret/{uuid.uuid4().hex}+{uuid.uuid4().hex[:8]}"
    secrets = {
        "S3 access key id": key_id,
        "S3 secret access key": secret_key,
        "PostgreSQL password": pg_password,
    }
    env.db_url = role_url
    env.extra.update(
        {
            "QC_S3_ACCESS_KEY_ID": key_id,
            "QC_S3_SECRET_ACCESS_KEY": secret_key,
            "QC_LOG_FORMAT": "json",
            "QC_LOG_LEVEL": "DEBUG",
        }
    )

    s3 = s3_endpoint.client()
    s3.upload_file(str(SAMPLES / "chelsea.jpg"), env.bucket, "art/chelsea.jpg")
    good = (SAMPLES / "coffee.jpg").read_bytes()
    s3.put_object(Bucket=env.bucket, Key="art/broken.jpg", Body=good[: len(good) // 3])
    outputs: list[str] = []

    def qc(*args: str, check: bool = True) -> str:
        result = env.qc(*args, check=check)
        outputs.append(f"$ qc {' '.join(args)}\n{result.stdout}\n{result.stderr}")
        return result.stdout

    qc("config")
    qc("config", "--json")
    [vendor_job] = job_ids(
        qc(
            "enqueue",
            "submission",
            "--vendor",
            "acme",
            f"s3://{env.bucket}/art/",
            f"s3://{env.bucket}/art/missing.jpg",
            "/etc/passwd",
        )
    )
    catalog = env.root / "catalog.csv"
    catalog.write_text(f"title_id,name,video_uri\nt-1,Missing Video,s3://{env.bucket}/videos/none.mp4\nbad,row\n")
    [title_job] = job_ids(qc("enqueue", "titles", str(catalog)))

    with env.worker() as worker:
        jobs = env.wait_jobs([vendor_job, title_job], worker=worker, timeout=240)
        # A task that blows up inside the database layer: logged with its traceback.
        celery = make_celery(env.settings())
        celery.send_task("qc.screen_chunk", args=[vendor_job, ["not-an-id"]], queue="screen")
        celery.send_task("qc.no_such_task", args=[1], queue="screen")
        celery.close()
        deadline = time.monotonic() + 60
        while not ("qc.screen_chunk failed" in worker.log() and "qc.no_such_task" in worker.log()):
            assert time.monotonic() < deadline, worker.log()[-4000:]
            time.sleep(0.3)
        qc("jobs")
        qc("jobs", str(vendor_job))
        qc("jobs", str(title_job), "--json")
        log = worker.log()
    by_id = {j.id: j for j in jobs}
    assert by_id[vendor_job].status == JobStatus.PARTIALLY_FAILED
    assert by_id[title_job].status == JobStatus.FAILED

    # The run did go through the paths that could leak: botocore's signed requests at DEBUG
    # (with the masked key id in their Authorization header), failures, a traceback.
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and {"level", "logger", "message", "time"} <= set(lines[0])
    assert any(line["logger"].startswith("botocore") and line["level"] == "DEBUG" for line in lines)
    assert "Authorization" in log and "Credential=***" in log.replace("\\", "")
    assert "NoSuchKey" in log and "image file is truncated" in log
    failed_task = next(line for line in lines if line["message"] == "qc.screen_chunk failed")
    assert "Traceback" in failed_task["exc_info"] and "not-an-id" in failed_task["exc_info"]

    rows = _all_rows_text(admin_url)
    assert "NoSuchKey" in rows["job_items"] and "outside the configured" in rows["job_items"]
    assert "videos/none.mp4" in rows["jobs"]
    haystacks = {
        "worker log": log,
        "CLI output": "\n".join(outputs),
        **{f"table {t}": v for t, v in rows.items()},
    }
    for what, secret in secrets.items():
        for form in _spellings(secret):
            for where, text_ in haystacks.items():
                assert form not in text_, f"the {what} ({form!r}) appears in the {where}"


# --- 3. SQL only through bound parameters -----------------------------------------------------
SQL_CALLS = {"text", "execute", "exec_driver_sql", "executemany", "executescript", "literal_column"}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def _migration(name: str):
    import importlib.util

    path = next((REPO / "migrations" / "versions").glob(f"*_{name}_*.py"))
    spec = importlib.util.spec_from_file_location(f"_migration_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _views_ddl_is_safe() -> None:
    m = _migration("0003")
    assert _IDENTIFIER.match(m.ROLE), m.ROLE
    for name, (_select, comment) in m.VIEWS.items():
        assert _IDENTIFIER.match(name), name
        assert "'" not in comment, f"{name}: a quote in a view comment would break COMMENT ON VIEW"


def _nothing_to_check() -> None:
    return None


#: (file, source of the SQL argument) -> (why it is safe, a check run by the test).
#: Statements that cannot take bound parameters (PRAGMA, DDL naming views and roles) are
#: built from module constants only; the check validates those constants.
ALLOWED: dict[tuple[str, str], tuple[str, Callable[[], None]]] = {
    ("qc_worker/db/engine.py", "f\"PRAGMA foreign_keys={('ON' if foreign_keys else 'OFF')}\""): (
        "PRAGMA takes no parameters; the value is one of two literals chosen by a bool",
        _nothing_to_check,
    ),
    ("qc_worker/db/engine.py", "f'PRAGMA busy_timeout={busy_timeout_ms:d}'"): (
        "PRAGMA takes no parameters; ':d' admits only an integer",
        _nothing_to_check,
    ),
    (
        "migrations/versions/20261130_0003_analyst_views.py",
        "f'CREATE VIEW {name} AS\\n{view_sql(name, dialect)}'",
    ): ("DDL: view names and SELECTs are the migration's own constants", _views_ddl_is_safe),
    (
        "migrations/versions/20261130_0003_analyst_views.py",
        "f\"COMMENT ON VIEW {name} IS '{comment}'\"",
    ): (
        "DDL: name and comment are the migration's constants (no quote in any comment)",
        _views_ddl_is_safe,
    ),
    ("migrations/versions/20261130_0003_analyst_views.py", "_CREATE_ROLE"): (
        "DDL: the role name is the constant ROLE (an identifier)",
        _views_ddl_is_safe,
    ),
    ("migrations/versions/20261130_0003_analyst_views.py", "_GRANT_CONNECT"): (
        "DDL: the role name is the constant ROLE; the database name goes through quote_ident",
        _views_ddl_is_safe,
    ),
    ("migrations/versions/20261130_0003_analyst_views.py", "_REVOKE"): (
        "DDL: the role name is the constant ROLE (an identifier)",
        _views_ddl_is_safe,
    ),
    (
        "migrations/versions/20261130_0003_analyst_views.py",
        "f'GRANT USAGE ON SCHEMA public TO {ROLE}'",
    ): ("DDL: the role name is the constant ROLE (an identifier)", _views_ddl_is_safe),
    (
        "migrations/versions/20261130_0003_analyst_views.py",
        "f\"GRANT SELECT ON {', '.join(VIEWS)} TO {ROLE}\"",
    ): (
        "DDL: view names and the role are the migration's constants (identifiers)",
        _views_ddl_is_safe,
    ),
    ("migrations/versions/20261130_0003_analyst_views.py", "f'DROP VIEW {name}'"): (
        "DDL: view names are the migration's constants (identifiers)",
        _views_ddl_is_safe,
    ),
}


def _built(node: ast.AST) -> str | None:
    """How ``node`` builds a string at run time, or None for a literal/other expression."""
    if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in node.values):
        return "an f-string"
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Mod)
        and isinstance(node.left, (ast.Constant, ast.JoinedStr))
    ):
        return "a %-format"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return "a .format() call"
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add)
        and any(
            isinstance(side, (ast.Constant, ast.JoinedStr)) and isinstance(getattr(side, "value", ""), str)
            for side in (node.left, node.right)
        )
    ):
        return "string concatenation"
    return None


def dynamic_sql(path: Path) -> list[tuple[int, str, str, str]]:
    """``(line, call, how, source)`` of each SQL call whose SQL is built at run time: the
    argument itself, or a name assigned (anywhere in the file) such a string."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assigned: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        sql = (
            node.args[0]
            if node.args
            else next((k.value for k in node.keywords if k.arg in ("statement", "text")), None)
        )
        if name not in SQL_CALLS or sql is None:
            continue
        how = _built(sql)
        if how is None and isinstance(sql, ast.Name):
            how = next((f"{h} (via {sql.id})" for v in assigned.get(sql.id, []) if (h := _built(v))), None)
        if how:
            found.append((node.lineno, name, how, ast.unparse(sql)))
    return sorted(found)


def test_sql_is_only_built_from_bound_parameters():
    offenders, used = [], set()
    for package in ("qc_worker", "migrations"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for line, call, how, source in dynamic_sql(path):
                if (rel, source) in ALLOWED:
                    used.add((rel, source))
                else:
                    offenders.append(f"{rel}:{line}: {call}() gets SQL built by {how}: {source[:120]}")
    assert not offenders, (
        "pass values as bound parameters (text(':name'), insert().values(...)); "
        "identifiers only from checked constants:\n" + "\n".join(offenders)
    )
    stale = set(ALLOWED) - used
    assert not stale, f"allow-list entries that match nothing any more (remove them): {sorted(stale)}"
    for _reason, check in {ALLOWED[k] for k in used}:
        check()


def test_the_sql_scanner_finds_what_it_must(tmp_path):
    """The scanner itself: each way of building SQL is caught, bound parameters are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from sqlalchemy import text\n"
        "def f(session, conn, name, uid):\n"
        "    session.execute(text(f\"SELECT * FROM t WHERE name = '{name}'\"))\n"
        '    conn.exec_driver_sql("DELETE FROM t WHERE id = %s" % uid)\n'
        '    conn.execute("SELECT {}".format(name))\n'
        '    conn.execute(text("SELECT * FROM t WHERE id = " + uid))\n'
        "    sql = f'DROP TABLE {name}'\n"
        "    conn.execute(text(sql))\n"
        "    session.execute(text('SELECT * FROM t WHERE name = :name'), {'name': name})\n"
        "    conn.exec_driver_sql('SELECT * FROM t WHERE id = %s', (uid,))\n"
        "    session.execute(stmt)\n"
    )
    found = [(line, how.split(" (")[0]) for line, _call, how, _src in dynamic_sql(sample)]
    assert found == [
        (3, "an f-string"),
        (4, "a %-format"),
        (5, "a .format() call"),
        (6, "string concatenation"),
        (8, "an f-string"),
    ]


def test_text_with_bound_parameters_is_what_the_code_uses(tmp_path):
    """A bound parameter carries hostile text as data: a classic injection string is stored
    verbatim and the table survives (SQLite; the same statement as the application's)."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = create_engine(url)
    hostile = "x'); DROP TABLE t; --"
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (name TEXT)"))
        c.execute(text("INSERT INTO t (name) VALUES (:name)"), {"name": hostile})
    with engine.connect() as c:
        assert c.execute(text("SELECT name FROM t")).scalar_one() == hostile
    engine.dispose()


# --- 4. local paths stay inside the roots (the full case runs in test_hostile_input.py) --------
def test_local_reads_are_confined_to_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(SAMPLES / "coffee.jpg", root / "in.jpg")
    (outside / "secret.jpg").write_bytes(b"secret")
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "dir-link").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root, confine=True)
    assert store.read(str(root / "in.jpg"))
    assert store.read("in.jpg")  # relative paths resolve against the root
    for bad in [
        "/etc/passwd",
        str(root / "link.jpg"),
        f"{root}/../outside/secret.jpg",
        "../outside/secret.jpg",
        str(root / "dir-link" / "secret.jpg"),
    ]:
        with pytest.raises(StorageError, match="outside the configured local roots"):
            store.read(bad)
        with pytest.raises(StorageError, match="outside the configured local roots"):
            store.list([bad])
    # A folder listing skips what points out of the root instead of following it.
    assert store.list([str(root)], recursive=True) == [str(root / "in.jpg")]
    for uri in [
        "s3://b/../x.jpg",
        "s3://b/a/../../x.jpg",
        "s3://b//etc/passwd",
        "s3://b/a\\..\\x.jpg",
    ]:
        with pytest.raises(StorageError, match="unsafe object key"):
            split_s3_uri(uri)
    with pytest.raises(StorageError):
        LocalStore(root, confine=True).write("../escape.jpg", b"x")
