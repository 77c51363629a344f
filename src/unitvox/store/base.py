"""The `Store` interface: a flat key space of objects under one root URI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class StoreError(RuntimeError):
    """A store that cannot be reached or used; the message names the URI."""


@dataclass(frozen=True)
class Unlisted:
    """Something under a store's root that is not an object it lists, and why (a dangling or
    looping symbolic link, a folder reached twice, a device or pipe, a folder it cannot read)."""

    key: str
    reason: str
    detail: str


class Store(ABC):
    """Objects under a root URI, addressed by `/`-separated keys relative to it.

    Writes are atomic: a reader sees the old object or the new one, never a part.
    Reading a missing key raises FileNotFoundError naming its URI.
    """

    uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def upload_file(self, local_path: str | Path, key: str) -> None:
        """Copy a local file to `key` (multipart for large files where the backend has it)."""

    @abstractmethod
    def download_file(self, key: str, local_path: str | Path) -> None: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size in bytes, or None when the object does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix` (recursively), sorted."""

    def scan(self, prefix: str = "") -> tuple[list[str], list[Unlisted]]:
        """`list(prefix)` and what it left out with why; only a local folder leaves anything out."""
        return list(self.list(prefix)), []

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def child(self, prefix: str) -> Store:
        """The store rooted at `prefix` under this one."""

    @property
    def local_root(self) -> Path | None:
        """The folder behind this store when it is local, else None."""
        return None

    def retry_counts(self) -> dict[str, int]:
        """Retries this store has needed so far, by kind (see `unitvox.store.retry.RETRY_KINDS`).

        Stores that never retry (a local folder) report none.
        """
        return {}

    # Helpers built on the primitives above -------------------------------------------------

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self.read_bytes(key))
        except json.JSONDecodeError as error:
            raise StoreError(f"{self.url(key)}: not valid JSON ({error})") from None

    def write_json(self, key: str, value: Any) -> None:
        self.write_text(key, json.dumps(value, indent=2, sort_keys=False) + "\n")

    def read_jsonl(self, key: str) -> Iterator[dict]:
        """Rows of a JSON Lines object, streamed through a local copy so memory stays flat."""
        with self.local_copy(key) as path, open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise StoreError(f"{self.url(key)} line {number}: not valid JSON ({error})") from None

    def write_jsonl(self, key: str, rows: Iterator[dict] | list[dict]) -> None:
        """Write rows as JSON Lines through a local temporary file, then upload it atomically."""
        with tempfile.TemporaryDirectory(prefix="unitvox-") as folder:
            path = Path(folder) / "rows.jsonl"
            with open(path, "w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(row, separators=(",", ":")) + "\n")
            self.upload_file(path, key)

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.local_copy(key) as path, open(path, "rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file with the object's content, for libraries that need a path."""
        if self.local_root is not None:
            path = self.local_root / key
            if not path.is_file():
                raise FileNotFoundError(f"{self.url(key)}: no such object")
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="unitvox-") as folder:
            path = Path(folder) / os.path.basename(key)
            self.download_file(key, path)
            yield path
