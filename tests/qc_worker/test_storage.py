"""The object store: local files (with confinement) and S3 against moto's real HTTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from qc_worker.config import Settings
from qc_worker.storage import (
    LocalStore,
    S3Store,
    StorageError,
    TransientStorageError,
    open_store,
    safe_key,
    split_s3_uri,
)
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, free_port


def _s3(endpoint_url: str, bucket: str | None, attempts: int = 2) -> S3Store:
    return S3Store(
        bucket=bucket,
        endpoint_url=endpoint_url,
        access_key_id=S3_ACCESS_KEY,
        secret_access_key=S3_SECRET_KEY,
        max_attempts=attempts,
        connect_timeout=1,
        read_timeout=5,
    )


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs/key", "a\\b", "a\x00b", ""])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(StorageError):
        safe_key(key)


def test_split_s3_uri():
    assert split_s3_uri("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(StorageError):
        split_s3_uri("s3://bucket/../x.jpg")
    with pytest.raises(StorageError):
        split_s3_uri("s3:///key")


def test_local_store_confines_reads_to_its_roots(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "in.jpg").write_bytes(b"inside")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "link.jpg").symlink_to(tmp_path / "secret.txt")
    store = LocalStore(root, confine=True)
    assert store.read(str(root / "in.jpg")) == b"inside"
    assert store.read("in.jpg") == b"inside"  # relative to the root
    for bad in (
        str(tmp_path / "secret.txt"),
        "../secret.txt",
        str(root / "link.jpg"),
        "/etc/passwd",
    ):
        with pytest.raises(StorageError, match="outside the configured local roots"):
            store.read(bad)
    assert store.list([root]) == [str(root / "in.jpg")]  # the symlink out is not listed
    # Unconfined (qc screen on a person's own folders) reads anything it is given.
    assert LocalStore(root).read(str(tmp_path / "secret.txt")) == b"outside"


def test_local_store_writes_atomically_under_its_root(tmp_path):
    store = LocalStore(tmp_path)
    path = store.write("thumbs/t1/000001.jpg", b"jpeg")
    assert Path(path) == tmp_path / "thumbs/t1/000001.jpg" and Path(path).read_bytes() == b"jpeg"
    assert not list(tmp_path.rglob(".part-*"))
    with pytest.raises(StorageError):
        store.write("../escape.jpg", b"x")


def test_local_store_size_limit(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"x" * 1000)
    with pytest.raises(StorageError, match="more than the limit"):
        LocalStore(tmp_path).read(str(tmp_path / "big.jpg"), max_bytes=999)


@pytest.mark.integration
def test_s3_round_trip_list_read_download(s3_endpoint, s3_bucket, tmp_path):
    store = _s3(s3_endpoint.url, s3_bucket)
    uri = store.write("in/a.jpg", b"AAAA", "image/jpeg")
    assert uri == f"s3://{s3_bucket}/in/a.jpg"
    store.write("in/sub/b.png", b"BB", "image/png")
    store.write("in/notes.txt", b"text")
    assert store.read(uri) == b"AAAA"
    assert sorted(store.list([f"s3://{s3_bucket}/in/"])) == [
        f"s3://{s3_bucket}/in/a.jpg",
        f"s3://{s3_bucket}/in/sub/b.png",
    ]
    assert store.list([f"s3://{s3_bucket}/in/"], recursive=False) == [f"s3://{s3_bucket}/in/a.jpg"]
    dest = tmp_path / "a.bin"
    store.download(uri, dest)
    assert dest.read_bytes() == b"AAAA"
    with pytest.raises(StorageError, match="more than the limit"):
        store.read(uri, max_bytes=3)


@pytest.mark.integration
def test_s3_missing_key_is_permanent_not_transient(s3_endpoint, s3_bucket, tmp_path):
    store = _s3(s3_endpoint.url, s3_bucket)
    with pytest.raises(StorageError) as err:
        store.read(f"s3://{s3_bucket}/nope.jpg")
    assert not isinstance(err.value, TransientStorageError)
    assert "NoSuchKey" in str(err.value)
    with pytest.raises(StorageError) as err:
        store.download(f"s3://{s3_bucket}/nope.mp4", tmp_path / "x")
    assert not isinstance(err.value, TransientStorageError)


@pytest.mark.integration
def test_s3_unreachable_endpoint_is_transient_and_names_no_secret():
    store = _s3(f"http://127.0.0.1:{free_port()}", "bucket", attempts=1)
    with pytest.raises(TransientStorageError) as err:
        store.read("s3://bucket/a.jpg")
    assert S3_SECRET_KEY not in str(err.value) and S3_ACCESS_KEY not in str(err.value)


@pytest.mark.integration
def test_open_store_routes_by_scheme_and_writes_to_the_bucket(s3_endpoint, s3_bucket, tmp_path):
    settings = Settings(
        _env_file=None,
        s3_endpoint_url=s3_endpoint.url,
        s3_bucket=s3_bucket,
        s3_access_key_id=S3_ACCESS_KEY,
        s3_secret_access_key=S3_SECRET_KEY,
        local_root=tmp_path,
    )
    (tmp_path / "local.jpg").write_bytes(b"L")
    store = open_store(settings)
    uri = store.write("overlays/x.png", b"PNG")
    assert uri == f"s3://{s3_bucket}/overlays/x.png"
    assert store.read(uri) == b"PNG"
    assert store.read(str(tmp_path / "local.jpg")) == b"L"
    with pytest.raises(StorageError):
        store.read("/etc/hostname")  # workers' local reads stay inside the local root
    # Without a bucket, writes land under the local root.
    local_only = open_store(Settings(_env_file=None, local_root=tmp_path))
    assert local_only.write("thumbs/1.jpg", b"J") == str(tmp_path / "thumbs/1.jpg")


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("Throttling", 400, True),
        ("RequestTimeout", 408, True),
        ("NoSuchKey", 404, False),
        ("AccessDenied", 403, False),
    ],
)
def test_s3_error_codes_split_into_transient_and_permanent(code, status, transient):
    """What boto3 still raises after its own retries: throttling and 5xx retry later, a
    missing or forbidden object fails its item."""
    from botocore.stub import Stubber

    store = _s3("http://127.0.0.1:9", "bucket", attempts=1)
    with Stubber(store.client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StorageError) as err:
            store.read("s3://bucket/a.jpg")
    assert isinstance(err.value, TransientStorageError) is transient
    assert code in str(err.value)


@pytest.mark.integration
def test_storage_errors_say_what_kind_of_failure_they_are(s3_endpoint, s3_bucket, tmp_path):
    from qc_worker.storage import LocalStore
    from qc_worker.vocabulary import FailureKind

    store = _s3(s3_endpoint.url, s3_bucket)
    with pytest.raises(StorageError) as err:
        store.read(f"s3://{s3_bucket}/nope.jpg")
    assert err.value.kind is FailureKind.MISSING
    store.write("big.jpg", b"x" * 100, "image/jpeg")
    with pytest.raises(StorageError) as err:
        store.read(f"s3://{s3_bucket}/big.jpg", max_bytes=10)
    assert err.value.kind is FailureKind.TOO_LARGE
    local = LocalStore(tmp_path)
    (tmp_path / "big.png").write_bytes(b"y" * 100)
    with pytest.raises(StorageError) as err:
        local.read(str(tmp_path / "gone.png"))
    assert err.value.kind is FailureKind.MISSING
    with pytest.raises(StorageError) as err:
        local.read(str(tmp_path / "big.png"), max_bytes=10)
    assert err.value.kind is FailureKind.TOO_LARGE


def test_local_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from qc_worker.storage import LocalStore

    old = os.umask(0o027)
    try:
        path = LocalStore(tmp_path).write("overlays/a.jpg", b"jpeg")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
