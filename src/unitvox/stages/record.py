"""`_SUCCESS.json` records: what a finished stage (or one phase shard of it) was made from and made.

A record holds the config hash, input fingerprints, outputs with sizes and hashes, versions and
timings. Work whose record matches its config and inputs, and whose outputs still exist, is skipped.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from typing import Any

from unitvox.errors import IncompleteError
from unitvox.layout import SUCCESS, success
from unitvox.store import Store

__all__ = ["fingerprint", "mismatch", "upstream", "versions", "write_success"]

_VERSIONED = ("unitvox", "numpy", "soundfile", "librosa", "scikit-learn", "sentencepiece", "torch", "transformers")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def fingerprint(store: Store, key: str) -> dict[str, Any]:
    """Size and SHA-256 of one object."""
    size = store.size(key)
    if size is None:
        raise FileNotFoundError(f"{store.url(key)}: expected output is missing")
    return {"size": size, "sha256": store.sha256(key)}


def write_success(
    store: Store,
    prefix: str,
    *,
    config_hash: str,
    inputs: dict[str, Any],
    outputs: list[str] = (),
    output_sets: dict[str, int] | None = None,
    started: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `<prefix>/_SUCCESS.json` last, after every output it lists.

    Args:
        outputs: keys (relative to the store) fingerprinted one by one.
        output_sets: key prefixes holding many objects, with how many each must keep.
    """
    finished = time.time()
    record = {
        "config_hash": config_hash,
        "inputs": inputs,
        "outputs": {key: fingerprint(store, key) for key in outputs},
        "output_sets": dict(output_sets or {}),
        "versions": versions(),
        "timings": {"started": started, "finished": finished, "seconds": round(finished - started, 3)},
        # Retries this process's object-store transfers needed so far (broken bodies, resets, 503 SlowDown).
        "store_retries": store.retry_counts(),
        **(extra or {}),
    }
    store.write_json(success(prefix), record)
    return record


def mismatch(store: Store, prefix: str, *, config_hash: str, inputs: dict[str, Any]) -> str | None:
    """Why the record under `prefix` does not cover this work, or None when it does."""
    key = success(prefix)
    if not store.exists(key):
        return "not run yet"
    try:
        record = store.read_json(key)
    except Exception as error:  # an unreadable record is as good as none
        return f"unreadable {SUCCESS}: {error}"
    if record.get("config_hash") != config_hash:
        return "config changed"
    if record.get("inputs") != inputs:
        return "inputs changed"
    for output, meta in record.get("outputs", {}).items():
        if store.size(output) != meta.get("size"):
            return f"output {output} missing or changed"
    for output_prefix, count in record.get("output_sets", {}).items():
        if sum(1 for _ in store.list(output_prefix)) < count:
            return f"outputs under {output_prefix} missing"
    return None


def upstream(store: Store, stage: str, output: str, reader: str) -> dict[str, str]:
    """Fingerprint of an earlier stage's output, from its record: `{output: sha256}`.

    Raises:
        IncompleteError: the earlier stage has not finished; the message says to run it.
    """
    key = success(stage)
    if not store.exists(key):
        raise IncompleteError(f"{reader} reads {stage}'s {output}, but {store.url(key)} does not exist: run {stage} first")
    return {output: store.read_json(key)["outputs"][output]["sha256"]}
