"""Metrics sinks: stages report progress and figures through a small interface.

The Prometheus implementation (the only module importing prometheus_client) plugs in here later;
a stage never needs to know which sink it talks to.
"""

from __future__ import annotations

from typing import Protocol


class MetricsSink(Protocol):
    """Where a stage sends its figures; label values must be bounded (run, stage, variant, shard)."""

    def gauge(self, name: str, value: float, **labels: str) -> None:
        """Set gauge `name` (a `unitvox_`-less base name such as `stage_items_done`)."""

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to counter `name`."""


class NullSink:
    """Discards everything: the default when no metrics backend is configured."""

    def gauge(self, name: str, value: float, **labels: str) -> None:
        pass

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        pass


class MemorySink:
    """Keeps the latest value of every series in a dict; for tests and summaries."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] = float(value)

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, tuple(sorted(labels.items()))))
