"""One numba cache folder per running process, so parallel shards never write the same cache files.

librosa compiles its numba functions (pYIN's local minima and maxima among them) with `cache=True`.
When two processes compile the same generalised ufunc at once, they can leave index and code files
that do not belong together, and from then on every process that loads them dies with a segmentation
fault (numba/numba#10128). unitvox runs shards in parallel, so a fresh install met this on its first
`evaluate`. Each unitvox process therefore takes a cache slot: the first folder under
`~/.cache/unitvox/numba/` whose lock it can hold, for as long as it runs. Slots persist, so code is
compiled once per slot rather than once per process, and no two live processes share one.

`NUMBA_CACHE_DIR` set by the user is kept as it is (a Kubernetes pod gets its own on scratch).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

# Set by `claim_slot`, so a child process knows the folder is its parent's, not the user's choice.
OWNER_VARIABLE = "UNITVOX_NUMBA_SLOT_OWNER"
MAX_SLOTS = 64

_held = None  # the open lock file of this process's slot, kept open until it exits


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unitvox" / "numba"


def claim_slot(root: Path | None = None) -> Path | None:
    """Point numba at a cache folder no other live process uses; returns it (None: left to the user).

    Must run before numba is imported, which reads the folder once. A child inherits the variable,
    so a folder this module chose for a parent is not trusted: the child claims its own.
    """
    global _held
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen and os.environ.get(OWNER_VARIABLE) != chosen:
        return None
    if _held is not None:
        return Path(_held.name).parent
    root = root or cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # no writable home: numba's own default, as before
    for index in range(MAX_SLOTS):
        folder = root / f"slot-{index}"
        try:
            folder.mkdir(exist_ok=True)
            lock = open(folder / ".lock", "a")
        except OSError:
            return None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _held = lock
        os.environ["NUMBA_CACHE_DIR"] = os.environ[OWNER_VARIABLE] = str(folder)
        return folder
    return None
