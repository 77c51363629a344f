"""A store of its own plus read-only folders borrowed from another store.

An ablation variant trains in `RUN/ablations/<variant>/` yet reads the base run's `prepare/`,
`tokenize/` and `bpe/` instead of recomputing them:

    OverlayStore(root.child("ablations/no_gan"), root, shared=("prepare", "tokenize", "bpe"))

Test: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/store/test_overlay.py -q
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from unitvox.store.base import Store, StoreError


class OverlayStore(Store):
    """Keys under the `shared` folders come from `shared_store` and cannot be written; every other
    key belongs to `own`.

    Keys are routed by folder rather than by whether `own` holds them: a variant must never see a
    base run's `train/` (it would resume from, or skip as done, someone else's training).

    Args:
        own: where the variant's reads and writes go.
        shared_store: the store lending its folders (the run root).
        shared: folder names relative to both stores, e.g. `("prepare", "tokenize")`; an empty name
            shares every key.
    """

    def __init__(self, own: Store, shared_store: Store, shared: tuple[str, ...]):
        self.own = own
        self.shared_store = shared_store
        self.shared = tuple(folder.strip("/") for folder in shared)
        self.uri = own.uri

    def _is_shared(self, key: str) -> bool:
        return any(folder == "" or key == folder or key.startswith(f"{folder}/") for folder in self.shared)

    def _route(self, key: str) -> Store:
        return self.shared_store if self._is_shared(key) else self.own

    def _writable(self, key: str) -> Store:
        if self._is_shared(key):
            raise StoreError(f"{self.shared_store.url(key)}: read-only here; {self.own.uri} shares that folder "
                             "with the run root and may not change it")
        return self.own

    def read_bytes(self, key: str) -> bytes:
        return self._route(key).read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._writable(key).write_bytes(key, data)

    def upload_file(self, local_path: str | Path, key: str) -> None:
        self._writable(key).upload_file(local_path, key)

    def download_file(self, key: str, local_path: str | Path) -> None:
        self._route(key).download_file(key, local_path)

    def size(self, key: str) -> int | None:
        return self._route(key).size(key)

    def delete(self, key: str) -> None:
        self._writable(key).delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix` from both sides: the variant's own and those of the shared folders."""
        if self._is_shared(prefix.rstrip("/")) and prefix:
            return self.shared_store.list(prefix)
        keys = [key for key in self.own.list(prefix) if not self._is_shared(key)]
        for folder in self.shared:
            if folder.startswith(prefix) or prefix.startswith(folder):
                shared_keys = self.shared_store.list(f"{folder}/" if folder else "")
                keys += [key for key in shared_keys if key.startswith(prefix)]
        return iter(sorted(set(keys)))

    def child(self, prefix: str) -> Store:
        prefix = prefix.strip("/")
        if self._is_shared(prefix):
            return OverlayStore(self.own.child(prefix), self.shared_store.child(prefix), ("",))
        inside = tuple(folder[len(prefix) + 1:] for folder in self.shared if folder.startswith(f"{prefix}/"))
        return OverlayStore(self.own.child(prefix), self.shared_store.child(prefix), inside)

    def url(self, key: str) -> str:
        return self._route(key).url(key) if key else self.uri

    def retry_counts(self) -> dict[str, int]:
        # Both sides are children of one run root, so they share one client and one count.
        return self.own.retry_counts()

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        # Delegated so a local run root hands out its own files instead of temporary copies.
        with self._route(key).local_copy(key) as path:
            yield path
