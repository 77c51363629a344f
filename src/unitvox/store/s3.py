"""A store in an S3 bucket: AWS, or any S3-compatible service such as MinIO.

This is the only module that imports boto3. Endpoint, region and credentials come from the
standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION or AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), so one URI works against
AWS and, once `AWS_ENDPOINT_URL=http://localhost:9000` is set, against a local MinIO.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from unitvox.store.base import Store, StoreError

DEFAULT_PART_SIZE = 64 * 1024 * 1024
"""Objects of at least this many bytes move as multipart transfers in parts of this size."""

MINIMUM_PART_SIZE = 5 * 1024 * 1024
"""S3 refuses multipart uploads whose parts (all but the last) are smaller than this."""

LIST_PAGE_SIZE = 1000
"""Keys asked for per ListObjectsV2 request; S3 never returns more than 1000."""

MAX_ATTEMPTS = 10
"""Tries per request, the first included; throttling and transient errors back off exponentially."""

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


def _new_client():
    endpoint_url = endpoint_url_from_environment()
    config = Config(
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
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


class _Connection:
    """One S3 client, made on first use and shared by a store, its children and their threads."""

    def __init__(self, part_size: int):
        self.transfer_config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        # boto3 clients are thread-safe but sessions are not, so only one thread may build it.
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _new_client()
        return self._client


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


class S3Store(Store):
    """Objects under `s3://bucket/prefix`, with retries, timeouts and multipart transfers.

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

    def read_bytes(self, key: str) -> bytes:
        with self._translate_errors("read", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            return response["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write one object; S3 replaces objects whole, so readers never see a partial write."""
        object_key = self._object_key(key)
        with self._translate_errors("write", key):
            if len(data) < self.part_size:
                self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)
            else:
                self.client.upload_fileobj(
                    io.BytesIO(data), self.bucket, object_key, Config=self._connection.transfer_config
                )

    def upload_file(self, local_path: str | Path, key: str) -> None:
        object_key = self._object_key(key)
        # upload_fileobj, unlike upload_file, lets botocore's own ClientError through for translation.
        with open(local_path, "rb") as source, self._translate_errors("upload", key):
            self.client.upload_fileobj(source, self.bucket, object_key, Config=self._connection.transfer_config)

    def download_file(self, key: str, local_path: str | Path) -> None:
        """Download to a hidden temporary file beside `local_path`, then rename it into place.

        A failed or killed download therefore never leaves a partial file at `local_path`.
        """
        object_key = self._object_key(key)
        destination = Path(local_path)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out, self._translate_errors("download", key):
                self.client.download_fileobj(self.bucket, object_key, out, Config=self._connection.transfer_config)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def size(self, key: str) -> int | None:
        object_key = self._object_key(key)
        try:
            with self._translate_errors("stat", key):
                return self.client.head_object(Bucket=self.bucket, Key=object_key)["ContentLength"]
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix:
            _check_key(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        keys = []
        with self._translate_errors("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix, PaginationConfig={"PageSize": self.list_page_size}
            )
            for page in pages:
                keys.extend(entry["Key"][len(root):] for entry in page.get("Contents", ()))
        # Keys ending in "/" are folder markers made by consoles and tools, not objects.
        return iter(sorted(key for key in keys if key and not key.endswith("/")))

    def delete(self, key: str) -> None:
        with self._translate_errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def child(self, prefix: str) -> S3Store:
        prefix = prefix.strip("/")
        _check_key(prefix)
        return S3Store(
            self.url(prefix),
            part_size=self.part_size,
            list_page_size=self.list_page_size,
            _connection=self._connection,
        )

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
            raise StoreError(f"{where}: cannot {action}: {error}") from None

    def _client_error(self, error: ClientError, action: str, key: str, where: str) -> Exception:
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        reason = f"{code}: {details.get('Message') or 'no message'}"
        if code == "NoSuchBucket" or (code in _MISSING_OBJECT_CODES and key and not self._bucket_exists()):
            return StoreError(f"{where}: cannot {action}: bucket {self.bucket!r} does not exist")
        if code in _MISSING_OBJECT_CODES and key:
            return FileNotFoundError(f"{where}: no such object")
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
