"""A store in a local folder (the embedded default)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from unitvox.store.base import Store, Unlisted


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
        destination = Path(local_path)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        os.close(handle)
        try:  # through a temporary file, so a failed copy never leaves part of one at `local_path`
            shutil.copyfile(source, temporary)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(self.scan(prefix)[0])

    def scan(self, prefix: str = "") -> tuple[list[str], list[Unlisted]]:
        """Files under `prefix`, following symbolic links to folders once each, and what was left out.

        A link to a folder that contains it (a loop) or to a folder already walked is not followed;
        dangling links, links that loop on themselves, pipes, devices and unreadable folders are
        left out. Each appears once among the `Unlisted`, with its reason. Names that are not
        valid UTF-8 stay as Python keeps them (surrogate escapes), so they still open.
        """
        base = self._path(prefix) if prefix else self.root
        start = base if not prefix or prefix.endswith("/") else base.parent  # "a" matches "ab.txt" too
        if not start.is_dir():
            return [], []
        walk = _Walk(self.root)
        walk.run(start)
        keys = sorted(key for key in walk.keys if key.startswith(prefix))
        return keys, sorted((p for p in walk.unlisted if p.key.startswith(prefix)), key=lambda p: p.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> LocalStore:
        child = LocalStore(str(self._path(prefix.strip("/"))))
        if self.uri.startswith("file://"):
            child.uri = f"file://{child.root}"
        return child


class _Walk:
    """A walk of a folder tree that follows links to folders, each distinct folder once.

    Real folders are walked first and links to folders afterwards, so a folder is listed under its
    own path rather than under a link's, whatever the names sort as.
    """

    def __init__(self, root: Path):
        self.root = root
        self.keys: list[str] = []
        self.unlisted: list[Unlisted] = []
        self._seen: dict[tuple[int, int], str] = {}  # (device, inode) of each folder walked -> its key

    def _key(self, path: str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def run(self, start: Path) -> None:
        status = start.stat()
        self._seen[(status.st_dev, status.st_ino)] = self._key(str(start)) or "."
        links = self._folder(str(start))
        while links:
            link = links.pop(0)
            links.extend(self._follow(link))

    def _folder(self, folder: str) -> list[str]:
        """Walk one real folder tree, not through links; returns the links to folders found in it."""
        pending, links = [folder], []
        while pending:
            current = pending.pop()
            try:
                entries = sorted(os.scandir(current), key=lambda entry: entry.name)
            except OSError as error:
                self.unlisted.append(Unlisted(self._key(current), "unreadable",
                                              f"cannot list the folder: {error.strerror or error}"))
                continue
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    continue  # an interrupted atomic write
                if entry.is_symlink():
                    links.extend(self._link(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    status = entry.stat(follow_symlinks=False)
                    self._seen.setdefault((status.st_dev, status.st_ino), self._key(entry.path))
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    self.keys.append(self._key(entry.path))
                else:
                    self.unlisted.append(Unlisted(self._key(entry.path), "not_a_file",
                                                  "not a regular file (a pipe, socket or device)"))
        return sorted(links)

    def _link(self, path: str) -> list[str]:
        """A symbolic link: a file is listed, a folder is returned to follow later, the rest reported."""
        key, target = self._key(path), _read_link(path)
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                self.unlisted.append(Unlisted(key, "symlink_loop", f"symbolic link to {target} loops on itself"))
            else:
                self.unlisted.append(Unlisted(key, "dangling_link", f"symbolic link to {target}, which does not exist"))
            return []
        if os.path.isdir(path):
            return [path]
        if os.path.isfile(path):
            self.keys.append(key)
        else:
            self.unlisted.append(Unlisted(key, "not_a_file", f"symbolic link to {target}, not a regular file"))
        return []

    def _follow(self, link: str) -> list[str]:
        """A link to a folder: walked unless that folder is already, or contains the link (a loop)."""
        status = os.stat(link)
        identity, key = (status.st_dev, status.st_ino), self._key(link)
        real, home = os.path.realpath(link), os.path.realpath(os.path.dirname(link))
        if home == real or home.startswith(real.rstrip(os.sep) + os.sep):
            self.unlisted.append(Unlisted(key, "symlink_loop", (
                f"symbolic link to {_read_link(link)}, a folder that contains the link; not followed")))
            return []
        if identity in self._seen:
            self.unlisted.append(Unlisted(key, "repeated_folder", (
                f"symbolic link to a folder already listed as {self._seen[identity]}; not listed twice")))
            return []
        self._seen[identity] = key
        return self._folder(link)


def _read_link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"
