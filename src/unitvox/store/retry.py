"""Retries for object-store transfers: a budget, exponential backoff with jitter, and a counter.

The budget comes from the environment, like the store's other settings (endpoint, credentials):

    UNITVOX_STORE_RETRIES=9               retries per request and per transfer (default 9: ten tries)
    UNITVOX_STORE_RETRY_BASE_SECONDS=0.2  first backoff; each retry doubles it, with full jitter
    UNITVOX_STORE_RETRY_MAX_SECONDS=20    the longest single backoff

Test: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/store/test_faults.py -q
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from unitvox.store.base import StoreError

T = TypeVar("T")

RETRY_KINDS = ("body", "connection", "throttled", "server")
"""Why a request or transfer was tried again: a response body broke while it was read; the
connection failed before a response (reset, refused, timed out); the service asked to slow down
(503 SlowDown, 429); the service failed (500, 502, 504)."""


class RetriesExhausted(StoreError):
    """A transfer that failed on every try of its budget; the message names the object, the tries and why."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try again and how long to wait between tries.

    Attributes:
        retries: tries after the first, for each request and for each whole transfer.
        base_seconds: the backoff before the first retry, doubled for each one after it.
        max_seconds: the longest backoff.
    """

    retries: int = 9
    base_seconds: float = 0.2
    max_seconds: float = 20.0

    @classmethod
    def from_environment(cls) -> RetryPolicy:
        """The policy set by UNITVOX_STORE_RETRIES, ..._RETRY_BASE_SECONDS and ..._RETRY_MAX_SECONDS."""
        default = cls()
        policy = cls(
            retries=int(_number("UNITVOX_STORE_RETRIES", default.retries, int)),
            base_seconds=_number("UNITVOX_STORE_RETRY_BASE_SECONDS", default.base_seconds, float),
            max_seconds=_number("UNITVOX_STORE_RETRY_MAX_SECONDS", default.max_seconds, float),
        )
        return policy

    @property
    def attempts(self) -> int:
        """Tries in all, the first included."""
        return self.retries + 1

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based): full jitter over an exponential cap."""
        cap = min(self.max_seconds, self.base_seconds * 2 ** (retry - 1))
        return random.uniform(0, cap)


def tries(count: int) -> str:
    """`1 try`, `3 tries`."""
    return f"{count} {'try' if count == 1 else 'tries'}"


def _number(name: str, default: float, kind: type) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise StoreError(f"{name}={text!r}: expected a {kind.__name__} (unset it for the default {default})") from None
    if value < 0:
        raise StoreError(f"{name}={text!r}: must not be negative")
    return value


class RetryCounter:
    """Retries made so far, by kind; shared by a store, its children and their threads."""

    def __init__(self) -> None:
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[kind] += amount

    def snapshot(self) -> dict[str, int]:
        """Counts by kind, every kind present (0 when none), sorted by name."""
        with self._lock:
            counts = dict(self._counts)
        return {kind: int(counts.get(kind, 0)) for kind in sorted({*RETRY_KINDS, *counts})}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


def with_retries(
    attempt: Callable[[], T],
    *,
    classify: Callable[[BaseException], str | None],
    policy: RetryPolicy,
    counter: RetryCounter,
    where: str,
    action: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `attempt` until it returns, trying again on errors `classify` names a retry kind for.

    `attempt` is called afresh each time, so it must carry what a broken try already moved (say,
    the offset a download reached) in state of its own.

    Raises:
        RetriesExhausted: every try of the budget failed; names `where`, the tries and the last error.
        Exception: the first error that `classify` does not call transient, unchanged.
    """
    started = time.monotonic()
    for number in range(1, policy.attempts + 1):
        try:
            return attempt()
        except Exception as error:
            kind = classify(error)
            if kind is None:
                raise
            if number == policy.attempts:
                seconds = time.monotonic() - started
                raise RetriesExhausted(
                    f"{where}: cannot {action}: gave up after {tries(number)} in {seconds:.1f} s "
                    f"(UNITVOX_STORE_RETRIES={policy.retries}); last error ({kind}): {type(error).__name__}: {error}"
                ) from None
            counter.add(kind)
            sleep(policy.backoff(number))
    raise AssertionError("unreachable")  # the loop returns or raises
