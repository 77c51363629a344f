"""Training health: named signals judged over the training log, a status, and a JSON report per check.

Inside training the trainer calls `HealthMonitor.check` every `train.health.every_steps` steps (rank
0); on a saved run, `unitvox diagnose training` (`diagnostics.training.training_diagnosis.diagnose_run`)
judges the saved log the same way.
Everything here works on plain training-log rows (dicts of floats keyed like "loss/mel",
"grad_norm/mpd"), so a saved run and a live one are judged by the same code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unitvox.config.health import HealthConfig
from unitvox.health.progress import Progress
from unitvox.health.signals import (
    CRITICAL, HEALTHY, JUDGES, SIGNALS, STATUS_NAMES, WARNING, Evidence, Row, Signal, json_number, keys, relative_slope,
    series,
)
from unitvox.layout import HEALTH, HEALTH_LATEST
from unitvox.store import Store

__all__ = ["CRITICAL", "HEALTHY", "SIGNALS", "WARNING", "HealthMonitor", "HealthReport", "Signal",
           "assess", "training_rows", "write_report"]


@dataclass
class HealthReport:
    """The verdict of one check: a signal per name in SIGNALS, and the figures behind them.

    `progress` (a saved run's: whether it had converged or was still improving when it stopped) joins
    the status when set; the live monitor leaves it None, since a run in training is meant to improve.
    """

    step: int
    signals: dict[str, Signal]
    figures: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    first_step: int | None = None
    checked_at: float = field(default_factory=time.time)
    progress: Progress | None = None

    @property
    def status(self) -> int:
        judged = [signal.severity for signal in self.signals.values()]
        return max(judged + ([self.progress.severity] if self.progress else []), default=HEALTHY)

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    @property
    def reasons(self) -> list[str]:
        """Names of the signals that are not healthy, the most severe first."""
        unhealthy = [name for name in SIGNALS if self.signals[name].severity > HEALTHY]
        return sorted(unhealthy, key=lambda name: -self.signals[name].severity)

    def summary(self) -> str:
        """One line: the status, each reason with its detail, and the run's progress when judged."""
        details = [f"{name} ({self.signals[name].detail})" for name in self.reasons]
        if self.progress:
            details.append(self.progress.detail)
        return f"{self.status_name} at step {self.step}" + (": " + "; ".join(details) if details else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "status": self.status_name, "reasons": self.reasons,
            "signals": {name: self.signals[name].to_dict() for name in SIGNALS},
            "figures": {name: json_number(value) for name, value in sorted(self.figures.items())},
            "window": {"rows": self.rows, "first_step": self.first_step, "last_step": self.step},
            "checked_at": round(self.checked_at, 3),
            **({"progress": self.progress.to_dict()} if self.progress else {}),
        }


def training_rows(log: Sequence[Row], up_to_step: int | None = None) -> list[Row]:
    """The log's training-step rows (validation rows left out), up to a step when given."""
    return [row for row in log if any(key.startswith("loss/") for key in row)
            and (up_to_step is None or row.get("step", 0) <= up_to_step)]


def assess(log: Sequence[Row], config: HealthConfig, weights: Mapping[str, float], *, step: int | None = None,
           parameter_norms: Mapping[str, float] | None = None) -> HealthReport:
    """Judge a run's health from its training log.

    Args:
        log: training-log rows in step order (validation rows are skipped).
        config: the thresholds.
        weights: the generator loss weights (`train.lambdas`), for loss balance.
        step: judge the run as it was at this step (default: the last logged step).
        parameter_norms: per-network parameter norms of the model at `step` (live or from a checkpoint).

    Returns:
        A report with a signal for every name in SIGNALS and the figures they were judged on.
    """
    history = training_rows(log, step)
    window = history[-config.window:]
    norms = dict(parameter_norms or {})
    figures = {f"param_norm/{name}": value for name, value in norms.items()}
    if window:
        figures.update({f"grad_norm/{name}": float(window[-1][f"grad_norm/{name}"])
                        for name in keys(window[-1:], "grad_norm/")})
        for key in keys(window, "loss/"):
            figures[f"trend/loss/{key}"] = relative_slope(*series(window, f"loss/{key}"))
    evidence = Evidence(window, history, config, weights, norms, figures)
    signals = {name: JUDGES[name](evidence) for name in SIGNALS}
    last = step if step is not None else (history[-1]["step"] if history else 0)
    return HealthReport(last, signals, figures, len(window), window[0]["step"] if window else None)


def write_report(store: Store, report: HealthReport) -> str:
    """Write the report as train/health/step_<8-digit step>.json and train/health/latest.json; returns the first key."""
    key = f"{HEALTH}/step_{report.step:08d}.json"
    payload = report.to_dict()
    store.write_json(key, payload)
    store.write_json(HEALTH_LATEST, {**payload, "report": key})
    return key


class HealthMonitor:
    """Runs `assess` every `config.every_steps` steps of a live run and writes each report."""

    def __init__(self, config: HealthConfig, weights: Mapping[str, float], store: Store):
        self.config, self.weights, self.store = config, dict(weights), store

    def due(self, step: int) -> bool:
        return self.config.enabled and step % self.config.every_steps == 0

    def check(self, log: Sequence[Row], step: int, parameter_norms: Mapping[str, float]) -> HealthReport:
        report = assess(log, self.config, self.weights, step=step, parameter_norms=parameter_norms)
        write_report(self.store, report)
        return report
