"""Artifacts addressed by URI: a local folder (a path or file://) or S3 (s3://bucket/prefix).

Stages read and write only through a `Store`; `open_store` picks the implementation from the URI.
"""

from __future__ import annotations

from unitvox.store.base import Store, StoreError
from unitvox.store.local import LocalStore


def open_store(uri: str) -> Store:
    """Open the store rooted at `uri` (`s3://bucket/prefix`, `file:///abs/path` or a plain path)."""
    if uri.startswith("s3://"):
        from unitvox.store.s3 import S3Store  # boto3 is imported only when an s3:// URI is used

        return S3Store(uri)
    if "://" in uri and not uri.startswith("file://"):
        raise StoreError(f"unsupported store URI {uri!r}: use a local path, file://... or s3://bucket/prefix")
    return LocalStore(uri)


def split_uri(uri: str) -> tuple[Store, str]:
    """Split an object URI into the store of its folder and its key (its file name)."""
    stripped = uri.rstrip("/")
    if "/" not in stripped.split("://", 1)[-1]:
        return open_store("."), stripped
    parent, name = stripped.rsplit("/", 1)
    return open_store(parent or "/"), name


def read_uri_text(uri: str) -> str:
    """Read one text object by URI (a config file, a list file)."""
    store, key = split_uri(uri)
    return store.read_text(key)


def is_store_uri(text: str) -> bool:
    return text.startswith(("s3://", "file://"))


__all__ = ["LocalStore", "Store", "StoreError", "is_store_uri", "open_store", "read_uri_text", "split_uri"]
