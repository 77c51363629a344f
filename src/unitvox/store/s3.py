"""A store in an S3 bucket: AWS, or any S3-compatible service such as MinIO.

This is the only module that imports boto3. Endpoint, region and credentials come from the
standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION or AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), so one URI works against
AWS and, once `AWS_ENDPOINT_URL=http://localhost:9000` is set, against a local MinIO.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar

import boto3
import urllib3.exceptions
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError, ClientError, ConnectionClosedError, FlexibleChecksumError, HTTPClientError, IncompleteReadError,
    NoCredentialsError, ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from unitvox.store.base import Store, StoreError
from unitvox.store.retry import RetryCounter, RetryPolicy, tries, with_retries

T = TypeVar("T")

DEFAULT_PART_SIZE = 64 * 1024 * 1024
"""Objects of at least this many bytes move as multipart transfers in parts of this size."""

MINIMUM_PART_SIZE = 5 * 1024 * 1024
"""S3 refuses multipart uploads whose parts (all but the last) are smaller than this."""

LIST_PAGE_SIZE = 1000
"""Keys asked for per ListObjectsV2 request; S3 never returns more than 1000."""

READ_CHUNK_BYTES = 1024 * 1024
"""Bytes read from a response body at a time; a body that breaks is asked for again from there."""

_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                             "TooManyRequestsException", "RequestThrottled", "BandwidthLimitExceeded"})
_SERVER_CODES = frozenset({"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException"})
# Errors of a response read after botocore handed it over (a streaming body), or while botocore read
# a small response body itself (it lets urllib3's and http.client's errors out unwrapped): botocore
# retries neither, so the store tries the transfer again.
_BROKEN_RESPONSE_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)

CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 120

_MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_ACCESS_CODES = frozenset(
    {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


def endpoint_url_from_environment() -> str | None:
    """The S3 endpoint named by AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, or None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region_from_environment() -> str | None:
    """The region named by AWS_REGION or AWS_DEFAULT_REGION (botocore reads only the latter)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _new_client(policy: RetryPolicy):
    endpoint_url = endpoint_url_from_environment()
    config = Config(
        # Standard mode retries throttling (503 SlowDown, 429), 5xx and connection errors before a
        # response with exponential backoff; broken bodies are the store's own retries.
        retries={"mode": "standard", "total_max_attempts": policy.attempts},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        # Several threads and a multipart transfer's workers share this client's connection pool.
        max_pool_connections=32,
        # Virtual-host addressing needs DNS per bucket, which MinIO and most local services lack.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    # Credentials come from the session's usual chain: environment, profile files, instance role.
    session = boto3.session.Session(region_name=region_from_environment())
    return session.client("s3", endpoint_url=endpoint_url, config=config)


PROCESS_RETRIES = RetryCounter()
"""Retries of every S3 store in this process (a stage's run root and its inputs alike)."""


class _Connection:
    """One S3 client, made on first use and shared by a store, its children and their threads,
    with the retry budget; the retries made through it add to `PROCESS_RETRIES`."""

    def __init__(self, part_size: int):
        self.transfer_config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
        self.policy = RetryPolicy.from_environment()
        self.retries = PROCESS_RETRIES
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        # boto3 clients are thread-safe but sessions are not, so only one thread may build it.
        if self._client is None:
            with self._lock:
                if self._client is None:
                    client = _new_client(self.policy)
                    client.meta.events.register("needs-retry.s3", _note_failure)
                    client.meta.events.register("request-created.s3", self._count_botocore_retry)
                    self._client = client
        return self._client

    def _count_botocore_retry(self, request, **_) -> None:
        # botocore numbers a request's tries in its context; a second try means it retried the first.
        context = getattr(request, "context", None) or {}
        if context.get("retries", {}).get("attempt", 1) > 1:
            self.retries.add(context.get("unitvox_failure") or "connection")


def _note_failure(request_dict: dict, response=None, caught_exception=None, **_) -> None:
    """Remember why a try failed, so the next try of the same request is counted under that kind."""
    kind = None
    if caught_exception is not None:
        kind = "connection"
    elif response is not None:
        http_response, parsed = response
        code = str((parsed or {}).get("Error", {}).get("Code", ""))
        status = getattr(http_response, "status_code", 200)
        if code in _THROTTLE_CODES or status in (429, 503):
            kind = "throttled"
        elif code in _SERVER_CODES or status >= 500:
            kind = "server"
    if kind is not None:
        request_dict.setdefault("context", {})["unitvox_failure"] = kind


class _BrokenBody(Exception):
    """A response body that failed while it was read (wraps the error that broke it)."""


def _broken_response_kind(error: BaseException) -> str | None:
    """The retry kind of an error botocore did not retry itself, or None for any other error."""
    if isinstance(error, (_BrokenBody, ResponseStreamingError, IncompleteReadError, FlexibleChecksumError)):
        return "body"
    if isinstance(error, BotoCoreError):
        return None  # raised by a request botocore already tried its whole budget for
    return "body" if isinstance(error, _BROKEN_RESPONSE_ERRORS) else None


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise StoreError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StoreError(f"no bucket in S3 URI {uri!r} (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def _check_key(key: str) -> None:
    # The same rule as LocalStore, so a key that works on one backend works on the other.
    if not key or key.startswith("/") or ".." in PurePosixPath(key).parts:
        raise ValueError(f"store key must be non-empty, relative and stay inside the store: {key!r}")


def _read_chunk(body) -> bytes:
    """The next piece of a response body; any error while reading it means the body broke."""
    try:
        return body.read(READ_CHUNK_BYTES)
    except Exception as error:
        raise _BrokenBody(f"{type(error).__name__}: {error}") from error


class S3Store(Store):
    """Objects under `s3://bucket/prefix`, with retries, timeouts and multipart transfers.

    Every request is retried by botocore on throttling, 5xx and connection errors; every transfer
    (a read, a download, an upload, a listing) is retried by the store when its response breaks
    while it is read, from the byte it broke at. The budget and backoff come from
    `unitvox.store.retry.RetryPolicy.from_environment`; `retry_counts()` says how many retries
    this process's S3 stores needed.

    Args:
        uri: `s3://bucket` or `s3://bucket/prefix`; trailing slashes are ignored.
        part_size: Objects of at least this many bytes are uploaded and downloaded in parts of
            this size, several at once. S3 needs at least 5 MiB.
        list_page_size: Keys per list request; lower it only to exercise pagination.

    Raises:
        StoreError: When `uri` names no bucket, or `part_size` is below S3's minimum.
    """

    def __init__(
        self,
        uri: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        list_page_size: int = LIST_PAGE_SIZE,
        _connection: _Connection | None = None,
    ):
        if part_size < MINIMUM_PART_SIZE:
            raise StoreError(f"{uri}: part_size {part_size} is below S3's minimum of {MINIMUM_PART_SIZE} bytes")
        self.bucket, self.prefix = _split_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.part_size = part_size
        self.list_page_size = list_page_size
        self._connection = _connection or _Connection(part_size)
        self._bucket_known_to_exist = False

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    @property
    def client(self):
        """The boto3 S3 client, created on first use and shared with child stores."""
        return self._connection.client

    def _object_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def retry_counts(self) -> dict[str, int]:
        """Retries made so far by the S3 stores of this process (the run root's and the inputs')."""
        return self._connection.retries.snapshot()

    def read_bytes(self, key: str) -> bytes:
        """The whole object; a body that breaks is asked for again from the byte it broke at."""
        out = io.BytesIO()
        with self._translate_errors("read", key):
            self._read_into(out, self._object_key(key), key, "read")
        return out.getvalue()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write one object; S3 replaces objects whole, so readers never see a partial write."""
        object_key = self._object_key(key)

        def attempt() -> None:
            if len(data) < self.part_size:
                self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)
            else:  # a multipart upload: its object appears only when CompleteMultipartUpload succeeds
                self.client.upload_fileobj(
                    io.BytesIO(data), self.bucket, object_key, Config=self._connection.transfer_config
                )

        with self._translate_errors("write", key):
            self._retrying(attempt, key, "write")

    def upload_file(self, local_path: str | Path, key: str) -> None:
        """Upload a local file; a multipart upload's object appears only once every part is in."""
        object_key = self._object_key(key)

        def attempt() -> None:
            # upload_fileobj, unlike upload_file, lets botocore's own ClientError through for translation.
            with open(local_path, "rb") as source:
                self.client.upload_fileobj(source, self.bucket, object_key, Config=self._connection.transfer_config)

        with self._translate_errors("upload", key):
            self._retrying(attempt, key, "upload")

    def download_file(self, key: str, local_path: str | Path) -> None:
        """Download to a hidden temporary file beside `local_path`, then rename it into place.

        Objects of `part_size` or more come in ranged parts; a part whose body breaks is asked for
        again from where it broke. A failed or killed download never leaves a partial file at
        `local_path`.
        """
        object_key = self._object_key(key)
        destination = Path(local_path)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out, self._translate_errors("download", key):
                head = self._retrying(lambda: self.client.head_object(Bucket=self.bucket, Key=object_key), key, "download")
                size, etag = head["ContentLength"], head["ETag"]
                if size < self.part_size:  # one request, which keeps botocore's checksum validation
                    self._read_into(out, object_key, key, "download", etag=etag)
                else:
                    for start in range(0, size, self.part_size):
                        self._read_into(out, object_key, key, "download", start=start,
                                        end=min(size, start + self.part_size), etag=etag)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def size(self, key: str) -> int | None:
        object_key = self._object_key(key)
        try:
            with self._translate_errors("stat", key):
                head = self._retrying(lambda: self.client.head_object(Bucket=self.bucket, Key=object_key), key, "stat")
                return head["ContentLength"]
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            _check_key(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        arguments = {"Bucket": self.bucket, "Prefix": root + prefix, "MaxKeys": self.list_page_size}
        with self._translate_errors("list", prefix):
            while True:  # page by page, so a broken page is asked for again rather than the whole listing
                page = self._retrying(lambda: self.client.list_objects_v2(**arguments), prefix, "list")
                keys.extend(entry["Key"][len(root):] for entry in page.get("Contents", ()))
                if not page.get("IsTruncated"):
                    break
                arguments["ContinuationToken"] = page["NextContinuationToken"]
        # Keys ending in "/" are folder markers made by consoles and tools, not objects.
        return iter(sorted(key for key in keys if key and not key.endswith("/")))

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with self._translate_errors("delete", key):
            self._retrying(lambda: self.client.delete_object(Bucket=self.bucket, Key=object_key), key, "delete")

    def child(self, prefix: str) -> S3Store:
        prefix = prefix.strip("/")
        _check_key(prefix)
        return S3Store(
            self.url(prefix),
            part_size=self.part_size,
            list_page_size=self.list_page_size,
            _connection=self._connection,
        )

    # Retries ---------------------------------------------------------------------------------

    def _retrying(self, attempt: Callable[[], T], key: str, action: str) -> T:
        """`attempt()`, tried again (within the budget) when its response broke after botocore's checks."""
        return with_retries(attempt, classify=_broken_response_kind, policy=self._connection.policy,
                            counter=self._connection.retries, where=self.url(key), action=action)

    def _read_into(self, out: BinaryIO, object_key: str, key: str, action: str, *, start: int = 0,
                   end: int | None = None, etag: str | None = None) -> None:
        """Write bytes `[start, end)` of an object (to its end when `end` is None) to `out`.

        A body that breaks is asked for again with a Range from the first byte not yet written, and
        If-Match on the object's ETag so that the pieces all come from one version of it. A read
        of the whole object keeps botocore's checksum validation.
        """
        state: dict[str, Any] = {"position": start, "end": end, "etag": etag}

        def attempt() -> None:
            arguments = {"Bucket": self.bucket, "Key": object_key}
            if state["etag"]:
                arguments["IfMatch"] = state["etag"]
            if state["position"] > 0 or state["end"] is not None:
                last = "" if state["end"] is None else str(state["end"] - 1)
                arguments["Range"] = f"bytes={state['position']}-{last}"
            response = self.client.get_object(**arguments)
            state["etag"] = state["etag"] or response.get("ETag")
            if state["end"] is None:
                state["end"] = state["position"] + response["ContentLength"]
            body = response["Body"]
            try:
                while chunk := _read_chunk(body):
                    out.write(chunk)
                    state["position"] += len(chunk)
            finally:
                body.close()
            if state["position"] != state["end"]:
                raise _BrokenBody(f"body ended at byte {state['position']} of {state['end']}")

        self._retrying(attempt, key, action)

    # Error translation -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate_errors(self, action: str, key: str = "") -> Iterator[None]:
        """Turn botocore's exceptions into FileNotFoundError or a StoreError naming the URI."""
        where = self.url(key)
        try:
            yield
        except ClientError as error:
            raise self._client_error(error, action, key, where) from None
        except NoCredentialsError:
            raise StoreError(
                f"{where}: cannot {action}: no AWS credentials found "
                "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ) from None
        except (BotoCoreError, Boto3Error) as error:
            tried = ""
            if isinstance(error, (HTTPClientError, BotocoreConnectionError)):
                tried = f" (after up to {tries(self._connection.policy.attempts)})"
            raise StoreError(f"{where}: cannot {action}: {error}{tried}") from None

    def _client_error(self, error: ClientError, action: str, key: str, where: str) -> Exception:
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        reason = f"{code}: {details.get('Message') or 'no message'}"
        if code == "NoSuchBucket" or (code in _MISSING_OBJECT_CODES and key and not self._bucket_exists()):
            return StoreError(f"{where}: cannot {action}: bucket {self.bucket!r} does not exist")
        if code in _MISSING_OBJECT_CODES and key:
            return FileNotFoundError(f"{where}: no such object")
        if code == "PreconditionFailed":
            return StoreError(f"{where}: cannot {action}: the object changed while it was being read; try again")
        made = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        if made > 1:
            reason += f"; after {tries(made)}"
        if code in _ACCESS_CODES:
            return StoreError(
                f"{where}: cannot {action}: access denied ({reason}); "
                "check the AWS credentials and the bucket's policy"
            )
        return StoreError(f"{where}: cannot {action} ({reason})")

    def _bucket_exists(self) -> bool:
        # HEAD requests answer a bare 404 whether the object or the whole bucket is missing.
        if self._bucket_known_to_exist:
            return True
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in {"404", "NoSuchBucket", "NotFound"}:
                return False
            # Other refusals (say, reading objects is allowed but listing is not) mean it exists.
        except BotoCoreError:
            return True  # cannot tell now; let the caller report the original error
        self._bucket_known_to_exist = True
        return True


PROBE_TIMEOUT_SECONDS = 5.0
"""How long `probe_bucket` waits to connect, and then for the answer, before calling the endpoint unreachable."""
PROBE_TRIES = 3
"""HEADs `probe_bucket` makes when the answer breaks (reset, 5xx, read timeout) before leaving it to the store."""


def probe_bucket(uri: str, timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> None:
    """A HEAD of the bucket of `uri` with a short timeout: is the endpoint up and the bucket there?

    `unitvox.preflight` calls it before a stage starts, so that a wrong endpoint or bucket is said at
    once rather than after the store's full retry budget, or after hours of work. An endpoint that
    cannot be connected to is unreachable; one that answers badly (a reset, 503 SlowDown, a read
    timeout) is there, and after PROBE_TRIES such answers the store's own retries take over.

    Raises:
        ConnectionError: no connection to the endpoint within the timeout (retrying later may help).
        LookupError: the endpoint answered that the bucket does not exist, or refused access to it.
    """
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    bucket, _ = _split_uri(uri)
    endpoint_url = endpoint_url_from_environment()
    where = endpoint_url or "the AWS default endpoint"
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=timeout_seconds,
                    read_timeout=timeout_seconds, s3={"addressing_style": "path"} if endpoint_url else None)
    client = boto3.session.Session(region_name=region_from_environment()).client(
        "s3", endpoint_url=endpoint_url, config=config)
    for _ in range(PROBE_TRIES):
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_OBJECT_CODES or code == "NoSuchBucket":
                raise LookupError(f"bucket {bucket!r} does not exist at {where}") from None
            if code in _ACCESS_CODES:
                raise LookupError(f"access to bucket {bucket!r} at {where} is denied ({code}); "
                                  "check the AWS credentials and the bucket's policy") from None
        except NoCredentialsError:
            raise LookupError("no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                              "or AWS_PROFILE)") from None
        except (EndpointConnectionError, ConnectTimeoutError) as error:
            raise ConnectionError(f"{where} is unreachable (no connection within {timeout_seconds:g} s: "
                                  f"{error})") from None
        except (BotoCoreError, Boto3Error, *_BROKEN_RESPONSE_ERRORS):
            pass  # it answered, badly: ask again, then leave it to the store's retries
