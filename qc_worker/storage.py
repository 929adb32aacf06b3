"""Where images come from and where thumbnails and overlays go: S3 and local files.

A source is named by a URI string, ``s3://bucket/key`` or a local path, so the pipeline,
the database and the CLI treat every store alike. :func:`open_store` gives one object that
routes each URI to the right backend and writes new objects (thumbnails, overlays) to the
configured bucket, or under the local root when no bucket is configured.

Errors come in two kinds, because the job queue treats them differently:

* :class:`StorageError` — this item cannot be had (missing key, unreadable file, a path
  outside the allowed roots, an unsafe key). Recorded on the item, never retried.
* :class:`TransientStorageError` — the store itself is unwell (endpoint unreachable,
  throttling, 5xx after boto3's own retries). The task retries later with back-off.

Credentials come from Settings when set, else from boto3's usual chain (environment, shared
files, instance roles); they are never logged or put in an error message.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from qc_worker.vocabulary import FailureKind

if TYPE_CHECKING:
    from qc_worker.config import Settings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
S3_SCHEME = "s3://"
#: S3 error codes that say "this object will not come, however often we ask".
_PERMANENT_S3_CODES = {
    "NoSuchKey",
    "NoSuchBucket",
    "404",
    "NotFound",
    "AccessDenied",
    "403",
    "InvalidObjectState",
    "InvalidBucketName",
    "KeyTooLongError",
    "InvalidRequest",
}


#: Codes that mean "ask again later" whatever their HTTP status (throttling comes as 400 too).
_TRANSIENT_S3_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestThrottled",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
}


class StorageError(Exception):
    """A source that cannot be listed or read; the message says which and why, ``kind``
    says it in the metrics' words (missing, too large, else a storage failure)."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.STORAGE) -> None:
        super().__init__(message)
        self.kind = kind


class TransientStorageError(StorageError):
    """The store did not answer properly; the same request may well succeed later."""


class Store(Protocol):
    """What the pipeline and the tasks need from a store."""

    def list(self, paths: Iterable[str | Path], *, recursive: bool = False) -> list[str]: ...

    def read(self, uri: str, max_bytes: int | None = None) -> bytes: ...

    def download(self, uri: str, dest: Path) -> None: ...

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str: ...


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.jpg`` -> ``("bucket", "a/b.jpg")``; refuses keys that climb out."""
    if not is_s3_uri(uri):
        raise StorageError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri}")
    return bucket, safe_key(key, allow_empty=True)


def safe_key(key: str, *, allow_empty: bool = False) -> str:
    """A relative object key with no ``..``, no leading ``/`` and no control characters.

    S3 keys are opaque strings, but keys are also joined to local folders (local store,
    downloads) and some S3-compatible servers normalise ``..``; refusing them keeps every
    key inside its bucket or root whichever backend sees it.
    """
    if not key:
        if allow_empty:
            return key
        raise StorageError("empty object key")
    if key.startswith("/") or "\\" in key or any(ord(c) < 32 for c in key):
        raise StorageError(f"unsafe object key {key!r}: absolute, backslash or control character")
    if ".." in PurePosixPath(key).parts:
        raise StorageError(f"unsafe object key {key!r}: '..' would leave the bucket or root")
    return key


class LocalStore:
    """Files on this machine. URIs are absolute paths.

    ``root`` is where :meth:`write` puts new files. With ``confine=True`` (workers), every
    path read must resolve (symlinks followed) inside ``root`` or one of ``extra_roots``:
    a queued job names paths, and a job must not read the worker's own files.
    """

    def __init__(self, root: Path | str = ".", *, confine: bool = False, extra_roots: Iterable[Path] = ()) -> None:
        self.root = Path(root).expanduser().resolve()
        self.confine = confine
        self.roots = [self.root, *(Path(r).expanduser().resolve() for r in extra_roots)]

    def _allowed(self, raw: str | Path) -> Path:
        path = Path(raw).expanduser()
        if self.confine and not path.is_absolute():
            path = self.root / path
        resolved = path.resolve()
        if self.confine and not any(resolved.is_relative_to(r) for r in self.roots):
            raise StorageError(f"{raw} is outside the configured local roots")
        return resolved

    def list(self, paths: Iterable[str | Path], *, recursive: bool = False) -> list[str]:
        """Image files named by ``paths`` (files as given; folders by image suffix).

        A path that does not exist is an error (a typo should stop the run, not screen
        nothing); a file given explicitly is kept whatever its suffix, so a misnamed image
        is screened and a non-image is recorded as failed rather than silently skipped.
        """
        found: list[str] = []
        for raw in paths:
            path = self._allowed(raw)
            if path.is_file():
                found.append(str(path))
            elif path.is_dir():
                pattern = "**/*" if recursive else "*"
                found += sorted(
                    str(p.resolve())
                    for p in path.glob(pattern)
                    if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES
                    and (not self.confine or any(p.resolve().is_relative_to(r) for r in self.roots))
                )
            else:
                raise StorageError(f"no such file or folder: {raw}", FailureKind.MISSING)
        return list(dict.fromkeys(found))

    def read(self, uri: str, max_bytes: int | None = None) -> bytes:
        path = self._allowed(uri)
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise StorageError(
                    f"{uri} is {path.stat().st_size} bytes, more than the limit of {max_bytes}", FailureKind.TOO_LARGE
                )
            return path.read_bytes()
        except OSError as exc:
            kind = FailureKind.MISSING if isinstance(exc, FileNotFoundError) else FailureKind.STORAGE
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}", kind) from exc

    def download(self, uri: str, dest: Path) -> None:
        path = self._allowed(uri)
        try:
            with path.open("rb") as src, dest.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self.root / safe_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a thumbnail, a crash leaves no stub.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            # mkstemp makes the file 0600; a written image gets the mode any new file would.
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(path)


def new_file_mode() -> int:
    """The mode ``open`` gives a new file under the process's umask, for files that are
    written under a temporary name by code that makes them 0600 (mkstemp, safetensors)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask: read from /proc on Linux, since os.umask can only read it by
    setting it, and another thread could create a file in between."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class S3Store:
    """Objects in S3 or an S3-compatible server (MinIO, moto), through boto3.

    boto3's "standard" retry mode already retries throttling, 5xx and dropped connections
    with exponential back-off; what still fails after that is a :class:`TransientStorageError`
    and the task retries it later, on a longer clock.
    """

    def __init__(
        self,
        *,
        bucket: str | None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"},
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one boto3 call, turning its errors into the two storage error kinds."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = f"{what}: {code or status} {error.get('Message', '')}".strip()
            if code in _TRANSIENT_S3_CODES:
                raise TransientStorageError(message) from exc
            if code in _PERMANENT_S3_CODES or (status is not None and 400 <= status < 500 and status not in (408, 429)):
                missing = code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404
                raise StorageError(message, FailureKind.MISSING if missing else FailureKind.STORAGE) from exc
            raise TransientStorageError(message) from exc
        except NoCredentialsError as exc:
            raise StorageError(f"{what}: no S3 credentials configured") from exc
        except BotoCoreError as exc:
            raise TransientStorageError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def list(self, paths: Iterable[str | Path], *, recursive: bool = True) -> list[str]:
        """Objects under each ``s3://bucket/prefix`` (image suffixes), or the key itself.

        A URI that names one object is kept as it is (checked when read, so a missing key
        fails that item only); a prefix ending in ``/`` lists everything under it.
        """
        found: list[str] = []
        for raw in paths:
            uri = str(raw)
            bucket, key = split_s3_uri(uri)
            if key and not key.endswith("/"):
                found.append(uri)
                continue
            paginator = self.client.get_paginator("list_objects_v2")
            pages = self._call(f"list {uri}", lambda p=paginator, b=bucket, k=key: list(p.paginate(Bucket=b, Prefix=k)))
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"]
                    if name.lower().endswith(IMAGE_SUFFIXES) and (recursive or "/" not in name[len(key) :]):
                        found.append(f"{S3_SCHEME}{bucket}/{name}")
        return list(dict.fromkeys(found))

    def read(self, uri: str, max_bytes: int | None = None) -> bytes:
        bucket, key = split_s3_uri(uri)
        response = self._call(f"get {uri}", self.client.get_object, Bucket=bucket, Key=key)
        size = response.get("ContentLength")
        if max_bytes is not None and size is not None and size > max_bytes:
            response["Body"].close()
            raise StorageError(f"{uri} is {size} bytes, more than the limit of {max_bytes}", FailureKind.TOO_LARGE)
        return self._call(f"read {uri}", response["Body"].read)

    def download(self, uri: str, dest: Path) -> None:
        """Stream an object to ``dest`` (multipart, never whole in memory): videos are big."""
        bucket, key = split_s3_uri(uri)
        self._call(f"download {uri}", self.client.download_file, bucket, key, str(dest))

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        if not self.bucket:
            raise StorageError("no bucket configured for writes (QC_S3_BUCKET)")
        key = safe_key(key)
        self._call(
            f"put s3://{self.bucket}/{key}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
        )
        return f"{S3_SCHEME}{self.bucket}/{key}"


class RoutingStore:
    """One store for every URI: ``s3://`` to S3, anything else to the local files.

    Writes go to the bucket when one is configured, else under the local root.
    """

    def __init__(self, local: LocalStore, s3: Callable[[], S3Store], *, bucket: str | None = None) -> None:
        self.local = local
        self._make_s3 = s3
        self.bucket = bucket

    @cached_property
    def s3(self) -> S3Store:
        """Made on first use: a local-only run never builds a boto3 client."""
        return self._make_s3()

    def _for(self, uri: str) -> LocalStore | S3Store:
        return self.s3 if is_s3_uri(uri) else self.local

    def list(self, paths: Iterable[str | Path], *, recursive: bool = False) -> list[str]:
        found: list[str] = []
        for raw in paths:
            found += self._for(str(raw)).list([raw], recursive=recursive)
        return list(dict.fromkeys(found))

    def read(self, uri: str, max_bytes: int | None = None) -> bytes:
        return self._for(uri).read(uri, max_bytes)

    def download(self, uri: str, dest: Path) -> None:
        self._for(uri).download(uri, dest)

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        if self.bucket:
            return self.s3.write(key, data, content_type)
        return self.local.write(key, data, content_type)


def open_store(settings: Settings, *, confine: bool = True) -> RoutingStore:
    """The store the settings describe. Workers confine local reads to the local root;
    ``qc screen`` on a person's own folders passes ``confine=False``."""

    def make_s3() -> S3Store:
        secret = settings.s3_secret_access_key
        key_id = settings.s3_access_key_id
        return S3Store(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
            max_attempts=settings.s3_max_attempts,
        )

    return RoutingStore(LocalStore(settings.local_root, confine=confine), make_s3, bucket=settings.s3_bucket)
