"""Metrics sinks: stages report progress and figures through a small interface.

`open_sink` is the one place that picks a sink from the config: training rank 0 serves `/metrics`,
short stages push to a Pushgateway, anything else discards. The Prometheus implementation
(prometheus/exporter.py) is the only module importing prometheus_client; every metric a sink accepts
is defined in prometheus/catalogue.py.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Protocol

from unitvox import __version__
from unitvox.prometheus.catalogue import lookup

if TYPE_CHECKING:
    from unitvox.config import Config

# Long-running stages serve /metrics for Prometheus to scrape; every other stage pushes.
SERVED_STAGES = ("train",)


def run_label(run_uri: str) -> str:
    """A short, bounded, label-safe name for a run: its last path part and a hash of the whole URI.

    Used for the `run` metric label and the `unitvox.dev/run` Kubernetes label, so both agree.
    """
    run_uri = run_uri.rstrip("/")
    tail = run_uri.rsplit("/", 1)[-1] or "run"
    slug = re.sub(r"[^a-z0-9-]+", "-", tail.lower()).strip("-")[:24].strip("-") or "run"
    return f"{slug}-{hashlib.sha256(run_uri.encode()).hexdigest()[:8]}"


class MetricsSink(Protocol):
    """Where a stage sends its figures; names and labels must be in `unitvox.prometheus.catalogue`.

    Every series also carries the sink's `run`, `stage` and `variant` labels; a call may set
    `stage` itself. Label values must be bounded (a shard index, a network name, never an id).
    """

    def gauge(self, name: str, value: float, **labels: str) -> None:
        """Set gauge `name` (a `unitvox_`-less base name such as `stage_items_done`)."""

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to counter `name`."""

    def close(self) -> None:
        """Push the last values or stop serving them; the sink takes no more figures after it."""


class NullSink:
    """Discards everything: the default when no metrics backend is configured.

    It still checks names against the catalogue, so a misspelt metric fails in tests rather than
    vanishing in production.
    """

    def gauge(self, name: str, value: float, **labels: str) -> None:
        lookup(name, "gauge", labels)

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        lookup(name, "counter", labels)

    def close(self) -> None:
        pass


class MemorySink:
    """Keeps the latest value of every series in a dict; for tests and summaries."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def gauge(self, name: str, value: float, **labels: str) -> None:
        lookup(name, "gauge", labels)
        self.values[(name, tuple(sorted(labels.items())))] = float(value)

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        lookup(name, "counter", labels)
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0.0) + amount

    def close(self) -> None:
        pass

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, tuple(sorted(labels.items()))))

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every series of `name`: its labels -> its value."""
        return {labels: value for (metric, labels), value in self.values.items() if metric == name}


def run_info(config: Config, stage: str) -> dict[str, str]:
    """The labels of `unitvox_run_info`: what made this process's figures.

    The git commit and image come from $UNITVOX_GIT_COMMIT and $UNITVOX_IMAGE when the image or
    the Job sets them, and are empty otherwise.
    """
    stage_hash = config.stage_hash(stage) if hasattr(config, stage) else ""
    return {"config_hash": stage_hash[:12], "version": __version__,
            "git_commit": os.environ.get("UNITVOX_GIT_COMMIT", ""), "image": os.environ.get("UNITVOX_IMAGE", "")}


def open_sink(config: Config, run: str, stage: str, *, shard: int = 0, rank: int | None = None) -> MetricsSink:
    """The sink a stage process reports to, chosen from `config.metrics`.

    Args:
        config: the run's config; its `metrics` section decides.
        run: the `run` label, `run_label(run URI)`.
        stage: the stage this process runs.
        shard: this process's shard index, part of the Pushgateway grouping key.
        rank: the distributed rank (default: $RANK, 0 without torchrun); only rank 0 exports.

    Returns:
        For training rank 0 with `metrics.port` set, a sink serving `/metrics` on it; for other
        stages with `metrics.pushgateway` set, a sink that pushes there; otherwise a NullSink.
    """
    settings = config.metrics
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    serving = stage in SERVED_STAGES and settings.port > 0 and rank == 0
    pushing = stage not in SERVED_STAGES and bool(settings.pushgateway) and rank == 0
    if not (serving or pushing):
        return NullSink()
    from unitvox.prometheus.exporter import PrometheusSink  # lazy: prometheus_client only when a sink exports

    sink = PrometheusSink(run=run, stage=stage, variant=settings.variant)
    sink.gauge("run_info", 1, **run_info(config, stage))
    if serving:
        sink.serve(settings.port, settings.address)
    else:
        sink.push_to(settings.pushgateway, {"run": run, "stage": stage, "shard": str(shard)},
                     settings.push_interval_seconds)
    return sink
