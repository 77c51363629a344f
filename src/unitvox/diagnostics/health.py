"""Training health: named signals judged over the training log, a status, and a JSON report per check.

Inside training the trainer calls `HealthMonitor.check` every `train.health.every_steps` steps (rank
0); on a saved run, `unitvox.diagnostics.training.diagnose_run` judges the saved log the same way.
Everything here works on plain training-log rows (dicts of floats keyed like "loss/mel",
"grad_norm/mpd"), so a saved run and a live one are judged by the same code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitvox.config.health import HealthConfig
from unitvox.store import Store

HEALTHY, WARNING, CRITICAL = 0, 1, 2
STATUS_NAMES = ("healthy", "warning", "critical")
# The bounded set of signal names: report keys, metric label values and alert selectors.
SIGNALS = ("non_finite", "exploding_gradients", "vanishing_gradients", "discriminator_dominance",
           "discriminator_collapse", "mode_collapse", "loss_divergence", "loss_balance", "speaker_similarity")
REPORTS = "train/health"
MODE_FIGURES = ("mode/spectral_variance_ratio", "mode/output_diversity_ratio")
SPEAKER_SIMILARITY = "speaker/similarity"

Row = Mapping[str, Any]


@dataclass
class Signal:
    """One signal's verdict: its severity, the value judged, the threshold it was judged against and why."""

    severity: int = HEALTHY
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"severity": STATUS_NAMES[self.severity], "value": _json_number(self.value),
                "threshold": _json_number(self.threshold), "detail": self.detail}


@dataclass
class HealthReport:
    """The verdict of one check: a signal per name in SIGNALS, and the figures behind them."""

    step: int
    signals: dict[str, Signal]
    figures: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    first_step: int | None = None
    checked_at: float = field(default_factory=time.time)

    @property
    def status(self) -> int:
        return max((signal.severity for signal in self.signals.values()), default=HEALTHY)

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    @property
    def reasons(self) -> list[str]:
        """Names of the signals that are not healthy, the most severe first."""
        unhealthy = [name for name in SIGNALS if self.signals[name].severity > HEALTHY]
        return sorted(unhealthy, key=lambda name: -self.signals[name].severity)

    def summary(self) -> str:
        """One line: the status and each reason with its detail."""
        if not self.reasons:
            return f"healthy at step {self.step}"
        details = "; ".join(f"{name} ({self.signals[name].detail})" for name in self.reasons)
        return f"{self.status_name} at step {self.step}: {details}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "status": self.status_name, "reasons": self.reasons,
            "signals": {name: self.signals[name].to_dict() for name in SIGNALS},
            "figures": {name: _json_number(value) for name, value in sorted(self.figures.items())},
            "window": {"rows": self.rows, "first_step": self.first_step, "last_step": self.step},
            "checked_at": round(self.checked_at, 3),
        }


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null (the detail names the offending figure)."""
    return value if value is None or math.isfinite(value) else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def training_rows(log: Sequence[Row], up_to_step: int | None = None) -> list[Row]:
    """The log's training-step rows (validation rows left out), up to a step when given."""
    return [row for row in log if any(key.startswith("loss/") for key in row)
            and (up_to_step is None or row.get("step", 0) <= up_to_step)]


def _series(rows: Sequence[Row], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that have `key`."""
    pairs = [(row["step"], float(row[key])) for row in rows if _number(row.get(key))]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def _keys(rows: Sequence[Row], prefix: str) -> list[str]:
    """The names after `prefix` of the keys that start with it, e.g. the networks of "grad_norm/"."""
    return sorted({key[len(prefix):] for row in rows for key in row if key.startswith(prefix)})


def relative_slope(steps: np.ndarray, values: np.ndarray) -> float:
    """The least-squares change over the span of `steps`, as a fraction of the mean: 0.5 = rose by half."""
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if len(values) < 2 or np.ptp(steps) == 0:
        return math.nan
    slope = np.polyfit(steps, values, 1)[0]
    mean = abs(float(values.mean()))
    return float(slope * np.ptp(steps) / mean) if mean > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Signals: each takes the window (and the whole history) and adds its figures


@dataclass
class _Inputs:
    window: list[Row]
    history: list[Row]
    config: HealthConfig
    weights: Mapping[str, float]
    parameter_norms: Mapping[str, float]
    figures: dict[str, float]


def _non_finite(inputs: _Inputs) -> Signal:
    bad = {key for row in inputs.window for key, value in row.items() if _number(value) and not math.isfinite(value)}
    bad |= {f"param_norm/{name}" for name, value in inputs.parameter_norms.items() if not math.isfinite(value)}
    if not bad:
        return Signal(HEALTHY, 0.0, 0.0, "every loss, norm and score is finite")
    names = sorted(bad)
    return Signal(CRITICAL, float(len(names)), 0.0, "NaN or infinity in " + ", ".join(names[:8]))


def _exploding_gradients(inputs: _Inputs) -> Signal:
    config, worst = inputs.config, {}
    for network in _keys(inputs.window, "grad_norm/"):
        values = _series(inputs.window, f"grad_norm/{network}")[1]
        values = values[~np.isnan(values)]  # NaN is non_finite's; an infinite norm still counts here
        if len(values):
            worst[network] = inputs.figures[f"grad_norm_max/{network}"] = float(values.max())
    if not worst:
        return Signal(detail="no gradient norms logged yet")
    network = max(worst, key=worst.get)
    value = worst[network]
    severity = CRITICAL if value >= config.exploding_gradient_norm_critical else \
        WARNING if value >= config.exploding_gradient_norm else HEALTHY
    threshold = config.exploding_gradient_norm_critical if severity == CRITICAL else config.exploding_gradient_norm
    return Signal(severity, value, threshold, f"largest pre-clipping gradient norm {value:.3g} ({network})")


def _vanishing_gradients(inputs: _Inputs) -> Signal:
    config, medians = inputs.config, {}
    for network in _keys(inputs.window, "grad_norm/"):
        values = _series(inputs.window, f"grad_norm/{network}")[1]
        if len(values) >= config.min_rows:
            medians[network] = float(np.median(values))
    if not medians:
        return Signal(detail="too few gradient norms to judge")
    network = min(medians, key=medians.get)
    value = medians[network]
    severity = WARNING if value < config.vanishing_gradient_norm else HEALTHY
    return Signal(severity, value, config.vanishing_gradient_norm, f"smallest median gradient norm {value:.3g} ({network})")


def _score_gaps(inputs: _Inputs) -> dict[str, tuple[float, float]]:
    """Per discriminator with enough rows: (mean gap D(real) - D(generated), adversarial-loss trend)."""
    gaps = {}
    for network in _keys(inputs.window, "disc_real/"):
        rows = [row for row in inputs.window if _number(row.get(f"disc_real/{network}"))
                and _number(row.get(f"disc_fake/{network}"))]
        if len(rows) < inputs.config.min_rows:
            continue
        real = float(np.mean([row[f"disc_real/{network}"] for row in rows]))
        fake = float(np.mean([row[f"disc_fake/{network}"] for row in rows]))
        trend = relative_slope(*_series(rows, f"adv_gen/{network}"))
        inputs.figures.update({f"disc_real/{network}": real, f"disc_fake/{network}": fake,
                               f"score_gap/{network}": real - fake, f"trend/adv_gen/{network}": trend})
        gaps[network] = (real - fake, trend)
    return gaps


def _discriminator_dominance(inputs: _Inputs) -> Signal:
    gaps = _score_gaps(inputs)
    if not gaps:
        return Signal(detail="too few adversarial steps to judge")
    threshold = inputs.config.dominance_score_gap
    # A falling adversarial loss means the generator is catching up, whatever the gap.
    dominant = {name: gap for name, (gap, trend) in gaps.items() if gap >= threshold and not trend < 0}
    if not dominant:
        name = max(gaps, key=lambda n: gaps[n][0])
        return Signal(HEALTHY, gaps[name][0], threshold, f"largest score gap {gaps[name][0]:.3f} ({name})")
    name = max(dominant, key=dominant.get)
    return Signal(WARNING, dominant[name], threshold,
                  f"{name} scores real {inputs.figures[f'disc_real/{name}']:.2f} and generated "
                  f"{inputs.figures[f'disc_fake/{name}']:.2f} (its loss near zero) while the generator's "
                  f"adversarial loss does not fall")


def _discriminator_collapse(inputs: _Inputs) -> Signal:
    gaps = {name: gap for name, (gap, _) in _score_gaps(inputs).items()}
    if not gaps:
        return Signal(detail="too few adversarial steps to judge")
    name = min(gaps, key=gaps.get)
    threshold = inputs.config.collapse_score_gap
    if gaps[name] > threshold:
        return Signal(HEALTHY, gaps[name], threshold, f"smallest score gap {gaps[name]:.3f} ({name})")
    return Signal(WARNING, gaps[name], threshold,
                  f"{name} no longer tells real from generated audio (score gap {gaps[name]:.3f})")


def _mode_collapse(inputs: _Inputs) -> Signal:
    config, means = inputs.config, {}
    for key in MODE_FIGURES:
        values = _series(inputs.window, key)[1]
        if len(values) >= config.min_rows:
            means[key] = inputs.figures[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    means = {key: value for key, value in means.items() if math.isfinite(value)}
    if not means:
        return Signal(detail="too few spectral figures to judge")
    key = min(means, key=means.get)
    value = means[key]
    severity = CRITICAL if value < config.mode_collapse_ratio_critical else \
        WARNING if value < config.mode_collapse_ratio else HEALTHY
    threshold = config.mode_collapse_ratio_critical if severity == CRITICAL else config.mode_collapse_ratio
    what = "log-mel variance" if key.endswith("variance_ratio") else "spread between outputs for different inputs"
    return Signal(severity, value, threshold, f"generated {what} is {value:.3f} of real audio's")


def _loss_divergence(inputs: _Inputs) -> Signal:
    config = inputs.config
    values = _series(inputs.history, config.divergence_loss)[1]
    if len(values) < config.min_rows:
        return Signal(detail=f"too few {config.divergence_loss} values to judge")
    width = min(config.window, len(values))
    rolling = np.convolve(values, np.ones(width) / width, mode="valid")
    best, recent = float(np.nanmin(rolling)) if np.isfinite(rolling).any() else math.nan, float(rolling[-1])
    if not best > 0:
        return Signal(detail=f"{config.divergence_loss} has no positive windowed mean to compare with")
    ratio = inputs.figures["divergence_ratio"] = recent / best
    severity = CRITICAL if ratio >= config.divergence_ratio_critical else \
        WARNING if ratio >= config.divergence_ratio else HEALTHY
    threshold = config.divergence_ratio_critical if severity == CRITICAL else config.divergence_ratio
    return Signal(severity, ratio, threshold,
                  f"{config.divergence_loss} mean {recent:.4g} over the last {width} rows is {ratio:.2f}x its lowest {best:.4g}")


def _loss_balance(inputs: _Inputs) -> Signal:
    from unitvox.vocoder.losses import TERM_METRICS

    config = inputs.config
    weighted: dict[str, list[float]] = {}
    rows = 0
    for row in inputs.window:
        present = {term: inputs.weights[term] * abs(float(row[key])) for term, key in TERM_METRICS.items()
                   if inputs.weights.get(term, 0) > 0 and _number(row.get(key))}
        if len(present) >= 2:  # one term alone (a warm-up, the no-GAN ablation) has nothing to balance
            rows += 1
            for term, value in present.items():
                weighted.setdefault(term, []).append(value)
    if rows < config.min_rows:
        return Signal(detail="too few steps with two or more weighted terms to judge")
    means = {term: float(np.mean(values)) for term, values in weighted.items()}
    total = sum(means.values())
    if not (math.isfinite(total) and total > 0):
        return Signal(detail="the weighted total is not a positive number")
    shares = {term: mean / total for term, mean in means.items()}
    inputs.figures.update({f"share/{term}": share for term, share in shares.items()})
    largest, smallest = max(shares, key=shares.get), min(shares, key=shares.get)
    if shares[largest] > config.balance_max_share:
        return Signal(WARNING, shares[largest], config.balance_max_share,
                      f"{largest} takes {shares[largest]:.2%} of the weighted generator loss; check train.lambdas.{largest}")
    if shares[smallest] < config.balance_min_share:
        return Signal(WARNING, shares[smallest], config.balance_min_share,
                      f"{smallest} takes only {shares[smallest]:.3%} of the weighted generator loss; "
                      f"check train.lambdas.{smallest}")
    return Signal(HEALTHY, shares[largest], config.balance_max_share, f"largest share {shares[largest]:.2%} ({largest})")


def _speaker_similarity(inputs: _Inputs) -> Signal:
    config = inputs.config
    values = _series(inputs.window, SPEAKER_SIMILARITY)[1]
    if len(values) < config.min_rows:
        return Signal(detail="no speaker conditioning, or too few steps to judge")
    value = inputs.figures[SPEAKER_SIMILARITY] = float(np.mean(values))
    severity = WARNING if value < config.speaker_similarity_min else HEALTHY
    return Signal(severity, value, config.speaker_similarity_min,
                  f"generated audio's speaker embedding has cosine similarity {value:.3f} to its reference's")


_JUDGES: dict[str, Callable[[_Inputs], Signal]] = {
    "non_finite": _non_finite, "exploding_gradients": _exploding_gradients,
    "vanishing_gradients": _vanishing_gradients, "discriminator_dominance": _discriminator_dominance,
    "discriminator_collapse": _discriminator_collapse, "mode_collapse": _mode_collapse,
    "loss_divergence": _loss_divergence, "loss_balance": _loss_balance, "speaker_similarity": _speaker_similarity,
}


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
                        for name in _keys(window[-1:], "grad_norm/")})
        for key in _keys(window, "loss/"):
            figures[f"trend/loss/{key}"] = relative_slope(*_series(window, f"loss/{key}"))
    inputs = _Inputs(window, history, config, weights, norms, figures)
    signals = {name: _JUDGES[name](inputs) for name in SIGNALS}
    last = step if step is not None else (history[-1]["step"] if history else 0)
    return HealthReport(last, signals, figures, len(window), window[0]["step"] if window else None)


def write_report(store: Store, report: HealthReport) -> str:
    """Write the report as train/health/step_XXXXXXXX.json and train/health/latest.json; returns the first key."""
    key = f"{REPORTS}/step_{report.step:08d}.json"
    payload = report.to_dict()
    store.write_json(key, payload)
    store.write_json(f"{REPORTS}/latest.json", {**payload, "report": key})
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
