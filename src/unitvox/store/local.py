"""A store in a local folder (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from unitvox.store.base import Store


class LocalStore(Store):
    """Objects as files under a folder; `file:///abs` and plain paths both work."""

    def __init__(self, uri: str):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        self.root = Path(os.path.abspath(Path(path).expanduser()))
        self.uri = str(self.root) if not uri.startswith("file://") else f"file://{self.root}"

    @property
    def local_root(self) -> Path:
        return self.root

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in Path(key).parts:
            raise ValueError(f"store key must be relative and stay inside the store: {key!r}")
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(f"{self.url(key)}: no such object") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def upload_file(self, local_path: str | Path, key: str) -> None:
        path = self._path(key)
        if Path(local_path).absolute() == path:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            shutil.copyfile(local_path, temporary)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def download_file(self, key: str, local_path: str | Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise FileNotFoundError(f"{self.url(key)}: no such object")
        shutil.copyfile(source, local_path)

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        start = base if not prefix or prefix.endswith("/") else base.parent  # "a" matches "ab.txt" too
        if not start.is_dir():
            return iter(())
        keys = []
        for folder, _, files in os.walk(start, followlinks=True):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an interrupted atomic write
                key = Path(folder, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> LocalStore:
        child = LocalStore(str(self._path(prefix.strip("/"))))
        if self.uri.startswith("file://"):
            child.uri = f"file://{child.root}"
        return child
