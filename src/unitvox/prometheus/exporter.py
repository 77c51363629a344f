"""The Prometheus sink: the only module that imports prometheus_client.

Training rank 0 serves its registry on `/metrics` (`serve`); short jobs push theirs to a
Pushgateway (`push_to`), now and then while they run and once more when they close. Each sink has a
private registry, so two sinks in one process (tests, or stages run in-process) never mix series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, generate_latest, pushadd_to_gateway, start_http_server,
)

from unitvox.prometheus.catalogue import BASE_LABELS, MetricSpec, lookup

LOG = logging.getLogger(__name__)
JOB = "unitvox"
# A push must not hold a stage up for long when the gateway is slow or gone.
PUSH_TIMEOUT_SECONDS = 10.0


class PrometheusSink:
    """A `MetricsSink` backed by a prometheus_client registry; refuses metrics not in the catalogue."""

    def __init__(self, *, run: str, stage: str, variant: str):
        self.registry = CollectorRegistry()
        self.base = {"run": run, "stage": stage, "variant": variant}
        self._metrics: dict[str, Gauge | Counter] = {}
        self._server = None
        self._gateway: str | None = None
        self._grouping: dict[str, str] = {}
        self._interval = 0.0
        self._last_push = -float("inf")
        self.port: int | None = None

    # MetricsSink ------------------------------------------------------------------------------

    def gauge(self, name: str, value: float, **labels: str) -> None:
        spec = lookup(name, "gauge", labels)
        self._metric(spec).labels(**{**self.base, **labels}).set(value)
        self._push_if_due()

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        spec = lookup(name, "counter", labels)
        self._metric(spec).labels(**{**self.base, **labels}).inc(amount)
        self._push_if_due()

    def close(self) -> None:
        """Push once more (when pushing) and stop the HTTP server (when serving)."""
        if self._gateway is not None:
            self.push()
            self._gateway = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # Serving and pushing ----------------------------------------------------------------------

    def serve(self, port: int, address: str = "0.0.0.0") -> int | None:
        """Serve `/metrics` on `address:port` (0 picks a free port) in a background thread.

        Returns:
            The port it listens on, or None when the port cannot be bound: training goes on without
            an endpoint rather than failing over it.
        """
        try:
            self._server, _ = start_http_server(port, addr=address, registry=self.registry)
        except OSError as error:
            LOG.warning("cannot serve /metrics on %s:%s (%s); going on without a metrics endpoint",
                        address, port, error)
            return None
        self.port = self._server.server_port
        LOG.info("serving /metrics on %s:%s", address, self.port)
        return self.port

    def push_to(self, gateway: str, grouping_key: Mapping[str, str], interval_seconds: float) -> None:
        """Push to `gateway` under `grouping_key` at the next update, then at most every `interval_seconds`."""
        self._gateway, self._grouping, self._interval = gateway, dict(grouping_key), interval_seconds

    def push(self) -> bool:
        """Push the registry now (replacing this group's series of the same names); False when it failed."""
        if self._gateway is None:
            return False
        self._last_push = time.monotonic()
        try:
            pushadd_to_gateway(self._gateway, job=JOB, registry=self.registry, grouping_key=self._grouping,
                               timeout=PUSH_TIMEOUT_SECONDS)
        except OSError as error:  # urllib's errors: the stage's work matters more than its figures
            LOG.warning("could not push metrics to %s: %s", self._gateway, error)
            return False
        return True

    def exposition(self) -> str:
        """The registry in the Prometheus text format, as a scrape would see it."""
        return generate_latest(self.registry).decode()

    # Internals --------------------------------------------------------------------------------

    def _push_if_due(self) -> None:
        if self._gateway is not None and time.monotonic() - self._last_push >= self._interval:
            self.push()

    def _metric(self, spec: MetricSpec) -> Gauge | Counter:
        metric = self._metrics.get(spec.name)
        if metric is None:
            kind = Gauge if spec.kind == "gauge" else Counter
            metric = kind(spec.exported, spec.help, labelnames=(*BASE_LABELS, *spec.labels), unit=spec.unit,
                          registry=self.registry)
            self._metrics[spec.name] = metric
        return metric
