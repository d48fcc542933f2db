"""Dataset stores on S3-compatible object storage: URLs, clients, clear errors, the writer lock.

A dataset store is a local directory or an ``s3://bucket/prefix/name.zarr`` URL. Everything that
opens, probes or locks a store goes through this module (:func:`open_group`, :func:`store_for`,
:func:`store_exists`, :func:`store_is_empty`, :func:`store_lock`): a local path keeps exactly
the behaviour it had (``zarr.open_group`` on the path, a ``LocalStore``: byte-identical stores),
a URL is opened with ``zarr.storage.FsspecStore`` over an asynchronous ``s3fs`` filesystem.

Configuration comes from the standard environment, read where the store is opened (so a Dask
worker uses its own): ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``), ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible
service such as SeaweedFS or MinIO; passed explicitly to s3fs and boto3) and ``AWS_REGION``
(or ``AWS_DEFAULT_REGION``). Without keys in the environment, botocore's other credential
sources (profiles, instance roles) are used. Connections time out after
:data:`CONNECT_TIMEOUT` seconds with few retries, so an unreachable endpoint is an error in
seconds, not a minute-long hang.

Before a store is first opened in a process, :func:`check_access` asks the bucket once
(``HeadBucket``) and turns each failure into an :class:`ObjectStoreError` (a
:class:`~prnf_core.errors.ConfigError`) that says what to do: no credentials (naming the
variables), credentials refused, no such bucket, endpoint unreachable. Creating, opening and
locking a store all pass through it, so these errors come before any simulation work.

The writer lock on object storage. Local stores keep their ``flock`` on ``<store>.lock``
(:func:`prnf_core.integrity.store_lock`); the kernel drops it when the holder dies. Object
storage has no such thing, so a store at ``s3://b/p/name.zarr`` is locked by the object
``s3://b/p/name.zarr.lock`` (beside the store's prefix, not inside it), a *lease*:

- Acquire: ``PutObject`` with ``If-None-Match: *``, which the service refuses (412) when the
  object exists: of concurrent writers exactly one creates it. The body holds the holder (pid,
  host, start time, a random token) and the lease length ``ttl`` (:data:`LOCK_TTL_SECONDS`,
  60 s, or ``$PRNF_S3_LOCK_TTL``).
- Hold: a heartbeat thread rewrites the object every ``ttl / 4`` seconds with
  ``If-Match: <its ETag>``, which renews its ``Last-Modified``. A failed renewal (the service
  down for a moment) is retried at the next beat; three beats may fail before the lease lapses.
- Expiry: a lock whose ``Last-Modified`` is more than ``ttl`` old by the *service's* clock (the
  ``Date`` of the same response: no clock skew between hosts) belongs to a dead holder. The
  next writer deletes exactly that version (``DeleteObject`` with ``If-Match: <stale ETag>``)
  and creates its own with ``If-None-Match``; of several writers that see the same stale lock,
  one wins. So a killed run blocks the store for at most ``ttl`` seconds.
- Release: ``DeleteObject`` with ``If-Match: <its ETag>``: never someone else's lock.
- A live holder makes a second writer wait up to its timeout, then raise
  :class:`~prnf_core.errors.StoreLockedError` naming the holder.

SeaweedFS 4.48 honours ``If-None-Match: *`` on PUT and ``If-Match`` on PUT and DELETE (checked
by ``tests/test_objectstore.py``; 16 concurrent conditional creates: exactly one wins), as AWS S3
does since 2024. Race window: a holder stalled for longer than ``ttl`` (a paused VM, a
heartbeat thread starved for a minute) loses its lease to the next writer while it may still be
writing; its next renewal then fails, it logs an error and stops renewing, and it does not
delete the new holder's lock. Both write the same deterministic chunks (checksummed), so the
data stays right; only the one-writer rule was broken for that while.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from prnf_core.errors import ConfigError, StoreLockedError

logger = logging.getLogger(__name__)

#: URL schemes a dataset store may use.
SCHEMES = ("s3",)
CONNECT_TIMEOUT = 3.0  # seconds to open a connection to the service
READ_TIMEOUT = 60.0  # seconds to wait for a response once connected
MAX_ATTEMPTS = 3  # botocore attempts per request (data); the preflight tries once
LOCK_TTL_SECONDS = 60.0
# Overrides the lease length: longer where a writer may stall (slow networks, paused VMs), shorter
# where a killed run's lock must lapse sooner. A holder's own ttl travels in its lock object.
LOCK_TTL_ENV = "PRNF_S3_LOCK_TTL"
LOCK_POLL_SECONDS = 0.5
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")
# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at each end.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ObjectStoreError(ConfigError):
    """A dataset store on object storage cannot be used: a malformed URL, an unknown scheme, no
    or refused credentials, a missing bucket, an unreachable endpoint. Raised before any work."""


# -- URLs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; ``""`` for the bucket root)."""

    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def sibling(self, suffix: str) -> S3Location:
        """The key ``<key><suffix>`` beside this prefix (``.lock``)."""
        return S3Location(self.bucket, self.key + suffix)


def scheme(value: str | Path) -> str | None:
    """The URL scheme of ``value`` (``"s3"``), or None for a local path."""
    match = _URL.match(str(value))
    return match.group(1).lower() if match else None


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` designates a store on object storage (any URL; see :func:`parse_url`)."""
    return scheme(path) is not None


def parse_url(value: str, field: str = "path", need_key: bool = True) -> S3Location:
    """The bucket and prefix of an ``s3://bucket/prefix`` URL.

    ``need_key``: the URL names a store (``s3://bucket/name.zarr``), not just a bucket.

    Raises:
        ObjectStoreError: another scheme (the allowed ones are named), no bucket or a malformed
            one, empty, ``.`` or ``..`` path segments, a query or fragment; the message starts
            with ``field``.
    """
    text = str(value)
    found = scheme(text)
    if found not in SCHEMES:
        shown = f"{found}://" if found else repr(text)
        raise ObjectStoreError(
            f"{field}: unsupported URL scheme {shown} in {text!r}; a dataset store is a local "
            f"path or a URL of scheme {', '.join(s + '://' for s in SCHEMES)} "
            "(s3://bucket/prefix/name.zarr)")
    if not text.lower().startswith("s3://"):
        raise ObjectStoreError(f"{field}: malformed URL {text!r}; write s3://bucket/prefix/name.zarr")
    rest = text[5:].rstrip("/")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ObjectStoreError(f"{field}: URL {text!r} names no bucket; write "
                               "s3://bucket/prefix/name.zarr")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ObjectStoreError(
            f"{field}: {bucket!r} in {text!r} is not a valid bucket name (3-63 lowercase "
            "letters, digits, dots and hyphens)")
    if any(c in text for c in "?#") or any(part in ("", ".", "..") for part in key.split("/")
                                          if key):
        raise ObjectStoreError(f"{field}: malformed URL {text!r}: no empty, '.' or '..' path "
                               "segments, no '?' or '#'")
    if need_key and not key:
        raise ObjectStoreError(f"{field}: URL {text!r} names a bucket but no store in it; "
                               "write s3://bucket/prefix/name.zarr")
    return S3Location(bucket, key)


def check_url(value: str, field: str = "path") -> str:
    """``value`` as a normalized store URL (no trailing slash); raises :class:`ObjectStoreError`."""
    return parse_url(value, field).url


# -- configuration from the environment ---------------------------------------------------------
def endpoint() -> str | None:
    """The S3 endpoint from the environment, None for AWS's own."""
    for name in ENDPOINT_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def describe_endpoint() -> str:
    return endpoint() or "AWS S3 (no AWS_ENDPOINT_URL set)"


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _credentials() -> dict[str, str]:
    keys = {"key": os.environ.get("AWS_ACCESS_KEY_ID"),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
            "token": os.environ.get("AWS_SESSION_TOKEN")}
    return {k: v for k, v in keys.items() if v}


def storage_options() -> dict[str, Any]:
    """s3fs options from the environment (endpoint, region, keys, short timeouts)."""
    options: dict[str, Any] = dict(_credentials())
    client_kwargs: dict[str, Any] = {}
    if endpoint():
        options["endpoint_url"] = endpoint()
        client_kwargs["endpoint_url"] = endpoint()
    if _region():
        client_kwargs["region_name"] = _region()
    options["client_kwargs"] = client_kwargs
    options["config_kwargs"] = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                                "retries": {"max_attempts": MAX_ATTEMPTS, "mode": "standard"}}
    return options


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def client(attempts: int = MAX_ATTEMPTS) -> Any:
    """A boto3 S3 client configured like the data store (cached per configuration)."""
    creds = _credentials()
    ident = (endpoint(), _region(), creds.get("key"), creds.get("secret"), creds.get("token"),
             attempts)
    with _clients_lock:
        if ident not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                            retries={"max_attempts": attempts, "mode": "standard"})
            _clients[ident] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint(), region_name=_region(),
                aws_access_key_id=creds.get("key"), aws_secret_access_key=creds.get("secret"),
                aws_session_token=creds.get("token"), config=config)
        return _clients[ident]


# -- the preflight ------------------------------------------------------------------------------
_checked: set[tuple] = set()


def check_access(path: str, field: str = "output") -> S3Location:
    """Fail now, with a clear :class:`ObjectStoreError`, unless the bucket of ``path`` can be
    reached with the credentials of this environment (once per process and bucket)."""
    where = parse_url(path, field)
    creds = _credentials()
    ident = (endpoint(), _region(), creds.get("key"), creds.get("secret"), creds.get("token"),
             where.bucket)
    if ident in _checked:
        return where
    if not creds.get("key") or not creds.get("secret"):
        _require_other_credentials(path)
    _call(lambda: client(attempts=1).head_bucket(Bucket=where.bucket), path,
          f"bucket {where.bucket!r}")
    _checked.add(ident)
    return where


def _require_other_credentials(path: str) -> None:
    import botocore.session

    try:
        found = botocore.session.get_session().get_credentials()
    except Exception:  # a broken profile file: as good as none
        found = None
    if found is None:
        raise ObjectStoreError(
            f"output: no credentials for object storage ({path} at {describe_endpoint()}): set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a service "
            "other than AWS) in the environment of the run and of its Dask workers")


def _call(request: Any, path: str, what: str) -> Any:
    """``request()``, with connection and permission failures turned into ObjectStoreError."""
    with storage_errors(path, what):
        return request()


@contextlib.contextmanager
def storage_errors(path: str, what: str, during: str = "") -> Iterator[None]:
    """Turn the object store's connection and permission failures inside the block into an
    :class:`ObjectStoreError` naming the endpoint, ``path`` and ``what`` was accessed;
    ``during``: what was under way (e.g. "while chunks were written; ..."), appended."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError,
            ReadTimeoutError) as exc:
        raise ObjectStoreError(
            f"output: object storage at {describe_endpoint()} is unreachable ({type(exc).__name__}"
            f"); check AWS_ENDPOINT_URL and that the service runs ({path}){during}") from None
    except NoCredentialsError:
        _require_other_credentials(path)
        raise
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or (status == 404 and what.startswith("bucket")):
            raise ObjectStoreError(
                f"output: {what} does not exist at {describe_endpoint()} ({path}); create it "
                "first (e.g. `aws s3 mb`) or choose another bucket") from None
        if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied") \
                or status == 403:
            key = os.environ.get("AWS_ACCESS_KEY_ID", "(none in the environment)")
            raise ObjectStoreError(
                f"output: object storage at {describe_endpoint()} refused access to {what} "
                f"({code or status}) with AWS_ACCESS_KEY_ID={key}; check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY and the key's permissions ({path})") from None
        raise


# -- stores -------------------------------------------------------------------------------------
def store_for(path: str | Path, read_only: bool = False) -> Any:
    """The Zarr store of ``path``: a URL gives an ``FsspecStore`` (s3fs, asynchronous); a local
    path is returned as the string Zarr opens as a ``LocalStore`` (unchanged behaviour)."""
    text = str(path)
    if not is_remote(text):
        return text
    from zarr.storage import FsspecStore

    url = check_access(text).url
    return FsspecStore.from_url(url, storage_options=storage_options(), read_only=read_only)


def open_group(path: str | Path, mode: str) -> Any:
    """``zarr.open_group`` of the store at ``path`` (Zarr v3), local or on object storage."""
    import zarr

    return zarr.open_group(store_for(path, read_only=mode == "r"), mode=mode, zarr_format=3)


def store_exists(path: str | Path) -> bool:
    """Whether anything is at ``path`` (a file or directory; an object under the prefix)."""
    if not is_remote(path):
        return Path(path).exists()
    where = check_access(str(path))
    return bool(_list(where, 1))


def store_is_empty(path: str | Path) -> bool:
    """Whether ``path`` is an empty directory (local) or a prefix without objects."""
    if not is_remote(path):
        p = Path(path)
        return p.is_dir() and not any(p.iterdir())
    return not store_exists(path)


def _list(where: S3Location, limit: int) -> list[str]:
    prefix = where.key.rstrip("/") + "/"
    answer = _call(lambda: client().list_objects_v2(Bucket=where.bucket, Prefix=prefix,
                                                    MaxKeys=limit), where.url,
                   f"bucket {where.bucket!r}")
    return [item["Key"] for item in answer.get("Contents", [])]


def list_stores(root: str) -> list[str]:
    """The URLs of the ``*.zarr`` prefixes directly under the URL ``root`` (one level; some
    services, SeaweedFS among them, still list a prefix emptied by :func:`remove_store`)."""
    where = parse_url(root, "dataset root", need_key=False)
    prefix = where.key.rstrip("/") + "/" if where.key else ""
    pages = client().get_paginator("list_objects_v2").paginate(
        Bucket=where.bucket, Prefix=prefix, Delimiter="/")
    found = []
    for page in _call(lambda: list(pages), where.url, f"bucket {where.bucket!r}"):
        for common in page.get("CommonPrefixes", []):
            key = common["Prefix"].rstrip("/")
            if key.endswith(".zarr"):
                found.append(f"s3://{where.bucket}/{key}")
    return sorted(found)


def remove_store(path: str) -> None:
    """Delete the store at URL ``path``: its group document ``zarr.json`` first, so that what
    an interruption leaves behind is no longer a store (readers and writers see none), then
    every other object under its prefix."""
    where = parse_url(path)
    prefix = where.key.rstrip("/") + "/"
    s3 = client()
    _call(lambda: s3.delete_object(Bucket=where.bucket, Key=f"{prefix}zarr.json"), path,
          "the store")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=prefix)
    for page in _call(lambda: list(pages), path, "the store"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:  # at most 1000 a page, as delete_objects takes
            _call(lambda keys=keys: s3.delete_objects(Bucket=where.bucket,
                                                      Delete={"Objects": keys, "Quiet": True}),
                  path, "the store")


def lock_url(path: str | Path) -> str:
    """The lock object of the store at URL ``path``: ``<store>.lock`` beside its prefix."""
    return parse_url(str(path)).sibling(".lock").url


# -- the lease lock on object storage ------------------------------------------------------------
def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or str(status)


def _conflict(exc: Exception) -> bool:
    """A failed precondition (412), or a concurrent conditional write (409)."""
    return _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _missing(exc: Exception) -> bool:
    return _error_code(exc) in ("NoSuchKey", "404", "NotFound")


class S3Lease:
    """A held lease on ``<store>.lock`` (see the module docstring); renewed by a thread."""

    def __init__(self, store: str, ttl: float = LOCK_TTL_SECONDS) -> None:
        self.store = store
        self.where = parse_url(store).sibling(".lock")
        self.ttl = float(ttl)
        self.etag: str | None = None
        self.lost = False
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(),
                       "started": datetime.now(UTC).isoformat(timespec="seconds"),
                       "token": uuid.uuid4().hex, "ttl": self.ttl}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        renewed = datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps({**self.holder, "renewed": renewed}).encode()

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lease (None) or return the live holder's info (``{}`` if unreadable)."""
        from botocore.exceptions import ClientError

        s3 = client()
        try:
            answer = _call(lambda: s3.put_object(Bucket=self.where.bucket, Key=self.where.key,
                                                 Body=self._body(), IfNoneMatch="*"),
                           self.store, f"lock {self.where.url}")
        except ClientError as exc:
            if not _conflict(exc):
                raise
        else:
            self.etag = answer["ETag"]
            return None
        try:  # someone holds it: alive, or a lease that expired with its holder?
            current = s3.get_object(Bucket=self.where.bucket, Key=self.where.key)
        except ClientError as exc:
            if _missing(exc):
                return self.try_acquire()  # released meanwhile
            raise
        raw = current["Body"].read()
        try:
            holder = json.loads(raw or b"{}")
        except ValueError:
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        now = parsedate_to_datetime(current["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (now - current["LastModified"]).total_seconds()
        ttl = float(holder.get("ttl", self.ttl)) if isinstance(holder.get("ttl"), (int, float)) \
            else self.ttl
        if age <= ttl:
            return holder
        logger.warning("store %s: taking over the lock of %s, not renewed for %.0f s (ttl %g s)",
                       self.store, holder, age, ttl)
        try:  # exactly that stale version: never a lock someone has just renewed or taken
            s3.delete_object(Bucket=self.where.bucket, Key=self.where.key,
                             IfMatch=current["ETag"])
        except ClientError as exc:
            if not (_conflict(exc) or _missing(exc)):
                raise
            return holder
        return self.try_acquire()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="prnf-s3-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(self.ttl / 4):
            try:
                answer = client().put_object(Bucket=self.where.bucket, Key=self.where.key,
                                             Body=self._body(), IfMatch=self.etag)
            except ClientError as exc:
                if _conflict(exc) or _missing(exc):
                    self.lost = True
                    logger.error("store %s: the writer lock %s was taken over by another run "
                                 "(this one did not renew it for %g s); stopped renewing it",
                                 self.store, self.where.url, self.ttl)
                    return
                logger.warning("store %s: renewing the writer lock failed: %s", self.store, exc)
            except (BotoCoreError, OSError) as exc:
                logger.warning("store %s: renewing the writer lock failed: %s", self.store, exc)
            else:
                self.etag = answer["ETag"]

    def release(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost or self.etag is None:
            return
        try:
            client().delete_object(Bucket=self.where.bucket, Key=self.where.key,
                                   IfMatch=self.etag)
        except ClientError as exc:
            if not (_conflict(exc) or _missing(exc)):
                logger.warning("store %s: could not remove the lock %s (%s); it expires after "
                               "%g s", self.store, self.where.url, exc, self.ttl)
        except (BotoCoreError, OSError) as exc:
            logger.warning("store %s: could not remove the lock %s (%s); it expires after %g s",
                           self.store, self.where.url, exc, self.ttl)


def lock_ttl() -> float:
    """The lease length: ``$PRNF_S3_LOCK_TTL`` seconds, else :data:`LOCK_TTL_SECONDS`.

    Raises:
        ConfigError: the variable is not a number of seconds ≥ 4.
    """
    text = os.environ.get(LOCK_TTL_ENV)
    if not text:
        return LOCK_TTL_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 4:  # renewed every ttl / 4: at least once a second
        raise ConfigError(f"{LOCK_TTL_ENV}: must be a number of seconds >= 4, got {text!r}")
    return value


@contextlib.contextmanager
def s3_lock(path: str, timeout: float = 0.0, ttl: float | None = None) -> Iterator[str]:
    """Hold the writer lease of the store at URL ``path`` for the ``with`` block (yields the
    lock's URL). Waits up to ``timeout`` seconds for a live holder, then raises
    :class:`~prnf_core.errors.StoreLockedError` naming it. ``ttl``: the lease length (default
    :func:`lock_ttl`)."""
    ttl = lock_ttl() if ttl is None else ttl
    check_access(path)
    lease = S3Lease(check_url(path), ttl=ttl)
    deadline = time.monotonic() + timeout
    while True:
        holder = lease.try_acquire()
        if holder is None:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreLockedError(path, holder, timeout)
        time.sleep(min(LOCK_POLL_SECONDS, left))
    lease.start()
    try:
        yield lease.where.url
    finally:
        lease.release()
