"""Where figures go: the Prometheus endpoint of training and the Pushgateway of short jobs.

Check: unitvox validate --config jobs/base.yaml --set metrics.port=9400
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unitvox.config.common import require

# Label values must stay few and short; a variant name is a slug like `no_gan` or `segment-2s`.
VARIANT_PATTERN = r"[a-z0-9][a-z0-9_-]{0,39}"
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


@dataclass
class MetricsConfig:
    """How a stage exports its figures (`unitvox.prometheus.open_sink` reads this).

    Attributes:
        port: where training rank 0 serves `/metrics` (0 turns it off).
        address: the interface it listens on: 127.0.0.1 (the default) keeps it on this machine;
            0.0.0.0 listens on every interface. Rendered pods listen on 0.0.0.0 for Prometheus to
            scrape them unless this names another interface.
        pushgateway: a URL such as http://pushgateway.monitoring:9091 that short stages (prepare,
            tokenize, bpe, evaluate, samples) push their progress and results to (empty: none).
        push_interval_seconds: how often a running short stage pushes its progress; it always
            pushes once more when it ends.
        variant: the ablation variant this run is, the `variant` label of every series
            (`base` for a run that is not part of an ablation).
        linger_seconds: after training stops on critical health, rank 0 keeps serving `/metrics`
            this long before it exits, so Prometheus scrapes the verdict (two scrape intervals).
    """

    port: int = 9400
    address: str = LOOPBACK
    pushgateway: str = ""
    push_interval_seconds: float = 30.0
    variant: str = "base"
    linger_seconds: float = 60.0

    EXECUTION_KEYS = ("port", "address", "pushgateway", "push_interval_seconds", "variant", "linger_seconds")

    def check(self, key: str) -> None:
        require(0 <= self.port <= 65535, f"{key}.port", f"must be a TCP port or 0, got {self.port}")
        require(bool(self.address), f"{key}.address", "must name an interface, e.g. 0.0.0.0 or 127.0.0.1")
        require(not self.pushgateway or self.pushgateway.startswith(("http://", "https://")), f"{key}.pushgateway",
                f"must be an http(s):// URL or empty, got {self.pushgateway!r}")
        require(self.push_interval_seconds > 0, f"{key}.push_interval_seconds", "must be positive")
        require(self.linger_seconds >= 0, f"{key}.linger_seconds", "must not be negative")
        require(re.fullmatch(VARIANT_PATTERN, self.variant) is not None, f"{key}.variant",
                f"must match {VARIANT_PATTERN} (a short slug), got {self.variant!r}")
