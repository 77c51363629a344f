"""The health signals: each judges training-log rows against `HealthConfig` thresholds.

A judge takes the evidence (the window of recent rows, the whole history, the thresholds, the loss
weights, parameter norms) and returns a `Signal`; it adds the figures it computed along the way.
Rows are plain dicts of floats keyed like "loss/mel" or "grad_norm/mpd", live or read from a log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unitvox.config.health import HealthConfig
from unitvox.config.train import TERM_METRICS

HEALTHY, WARNING, CRITICAL = 0, 1, 2
STATUS_NAMES = ("healthy", "warning", "critical")
# The bounded set of signal names: report keys, metric label values and alert selectors.
SIGNALS = ("non_finite", "exploding_gradients", "vanishing_gradients", "discriminator_dominance",
           "discriminator_collapse", "mode_collapse", "loss_divergence", "loss_balance", "speaker_similarity")
MODE_FIGURES = ("mode/spectral_variance_ratio", "mode/output_diversity_ratio")
SPEAKER_SIMILARITY = "speaker/similarity"
_NAMES_SHOWN = 8

Row = Mapping[str, Any]


@dataclass
class Signal:
    """One signal's verdict: its severity, the value judged, the threshold it was judged against and why."""

    severity: int = HEALTHY
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"severity": STATUS_NAMES[self.severity], "value": json_number(self.value),
                "threshold": json_number(self.threshold), "detail": self.detail}


def json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null (the detail names the offending figure)."""
    return value if value is None or math.isfinite(value) else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _graded(value: float, warning: float, critical: float, *, above: bool) -> tuple[int, float]:
    """(severity, the threshold it passed or the warning one) of a value with two thresholds.

    `above`: past a threshold means at or above it; else below it.
    """
    passed = (lambda limit: value >= limit) if above else (lambda limit: value < limit)
    if passed(critical):
        return CRITICAL, critical
    return (WARNING if passed(warning) else HEALTHY), warning


def series(rows: Sequence[Row], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that have `key`."""
    pairs = [(row["step"], float(row[key])) for row in rows if _number(row.get(key))]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def keys(rows: Sequence[Row], prefix: str) -> list[str]:
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


@dataclass
class Evidence:
    """What a judge looks at; `figures` collects what the judges computed, for the report."""

    window: list[Row]
    history: list[Row]
    config: HealthConfig
    weights: Mapping[str, float]
    parameter_norms: Mapping[str, float]
    figures: dict[str, float]


def _non_finite(evidence: Evidence) -> Signal:
    bad = {key for row in evidence.window for key, value in row.items() if _number(value) and not math.isfinite(value)}
    bad |= {f"param_norm/{name}" for name, value in evidence.parameter_norms.items() if not math.isfinite(value)}
    if not bad:
        return Signal(HEALTHY, 0.0, 0.0, "every loss, norm and score is finite")
    names = sorted(bad, key=lambda name: (not name.startswith("loss/"), name))  # losses first: the clearest clue
    shown = ", ".join(names[:_NAMES_SHOWN])
    if len(names) > _NAMES_SHOWN:
        shown += f" and {len(names) - _NAMES_SHOWN} more"
    return Signal(CRITICAL, float(len(names)), 0.0, f"NaN or infinity in {shown}")


def _exploding_gradients(evidence: Evidence) -> Signal:
    config, worst = evidence.config, {}
    for network in keys(evidence.window, "grad_norm/"):
        values = series(evidence.window, f"grad_norm/{network}")[1]
        values = values[~np.isnan(values)]  # NaN is non_finite's; an infinite norm still counts here
        if len(values):
            worst[network] = evidence.figures[f"grad_norm_max/{network}"] = float(values.max())
    if not worst:
        return Signal(detail="no gradient norms logged yet")
    network = max(worst, key=worst.get)
    value = worst[network]
    severity, threshold = _graded(value, config.exploding_gradient_norm, config.exploding_gradient_norm_critical,
                                  above=True)
    return Signal(severity, value, threshold, f"largest pre-clipping gradient norm {value:.3g} ({network})")


def _vanishing_gradients(evidence: Evidence) -> Signal:
    config, medians = evidence.config, {}
    for network in keys(evidence.window, "grad_norm/"):
        values = series(evidence.window, f"grad_norm/{network}")[1]
        if len(values) >= config.min_rows:
            medians[network] = float(np.median(values))
    if not medians:
        return Signal(detail="too few gradient norms to judge")
    network = min(medians, key=medians.get)
    value = medians[network]
    severity = WARNING if value < config.vanishing_gradient_norm else HEALTHY
    return Signal(severity, value, config.vanishing_gradient_norm,
                  f"smallest median gradient norm {value:.3g} ({network})")


def _windowed(values: np.ndarray, width: int) -> tuple[float, float, float]:
    """(latest, lowest, highest) of the means of `width` consecutive values (all of them when fewer).

    Lowest and highest skip non-finite means; they are NaN when every mean is.
    """
    width = min(width, len(values))
    means = np.convolve(values, np.ones(width) / width, mode="valid")
    finite = means[np.isfinite(means)]
    if not len(finite):
        return float(means[-1]), math.nan, math.nan
    return float(means[-1]), float(finite.min()), float(finite.max())


def _score_gaps(evidence: Evidence) -> dict[str, tuple[float, float]]:
    """Per discriminator with enough rows: (mean D(real) - D(generated) over the window, its highest windowed mean).

    Also records each one's mean scores, gap and adversarial-loss trend among the figures.
    """
    gaps = {}
    for network in keys(evidence.window, "disc_real/"):
        real_key, fake_key = f"disc_real/{network}", f"disc_fake/{network}"
        scored = lambda rows: [row for row in rows if _number(row.get(real_key)) and _number(row.get(fake_key))]
        recent = scored(evidence.window)
        if len(recent) < evidence.config.min_rows:
            continue
        *_, peak = _windowed(np.asarray([row[real_key] - row[fake_key] for row in scored(evidence.history)]),
                            evidence.config.window)
        real, fake = (float(np.mean([row[key] for row in recent])) for key in (real_key, fake_key))
        trend = relative_slope(*series(recent, f"adv_gen/{network}"))
        evidence.figures.update({real_key: real, fake_key: fake, f"score_gap/{network}": real - fake,
                                 f"trend/adv_gen/{network}": trend})
        gaps[network] = (real - fake, peak)
    return gaps


def _discriminator_dominance(evidence: Evidence) -> Signal:
    gaps = {name: gap for name, (gap, _) in _score_gaps(evidence).items()}
    if not gaps:
        return Signal(detail="too few adversarial steps to judge")
    name = max(gaps, key=gaps.get)
    threshold = evidence.config.dominance_score_gap
    if gaps[name] < threshold:
        return Signal(HEALTHY, gaps[name], threshold, f"largest score gap {gaps[name]:.3f} ({name})")
    # Least squares: a gap this wide leaves the generator's adversarial loss near its ceiling of 1 per
    # sub-discriminator, so the discriminator no longer tells the generator how to improve.
    return Signal(WARNING, gaps[name], threshold,
                  f"{name} scores real {evidence.figures[f'disc_real/{name}']:.2f} and generated "
                  f"{evidence.figures[f'disc_fake/{name}']:.2f}: its loss is near zero and the generator's "
                  f"adversarial loss near its ceiling")


def _discriminator_collapse(evidence: Evidence) -> Signal:
    config = evidence.config
    # A discriminator that never told real from generated apart is still learning, not collapsed.
    gaps = {name: gap for name, (gap, peak) in _score_gaps(evidence).items() if peak >= config.collapse_min_peak_gap}
    if not gaps:
        return Signal(detail="no discriminator has separated real from generated audio yet")
    name = min(gaps, key=gaps.get)
    if gaps[name] > config.collapse_score_gap:
        return Signal(HEALTHY, gaps[name], config.collapse_score_gap,
                      f"smallest score gap {gaps[name]:.3f} ({name})")
    return Signal(WARNING, gaps[name], config.collapse_score_gap,
                  f"{name} no longer tells real from generated audio (score gap {gaps[name]:.3f}, "
                  f"down from {config.collapse_min_peak_gap} or more)")


def _mode_collapse(evidence: Evidence) -> Signal:
    config, means = evidence.config, {}
    for key in MODE_FIGURES:
        values = series(evidence.history, key)[1]
        if len(series(evidence.window, key)[1]) < config.min_rows:
            continue
        evidence.figures[key], _, peak = _windowed(values, config.window)
        # An untrained generator's near-silent output is alike for every input; collapse is a fall
        # from outputs that once varied.
        if peak >= config.mode_collapse_min_peak and math.isfinite(evidence.figures[key]):
            means[key] = evidence.figures[key]
    if not means:
        return Signal(detail="too few spectral figures, or the generator's output has not varied yet")
    key = min(means, key=means.get)
    value = means[key]
    severity, threshold = _graded(value, config.mode_collapse_ratio, config.mode_collapse_ratio_critical, above=False)
    what = "log-mel variance" if key.endswith("variance_ratio") else "spread between outputs for different inputs"
    return Signal(severity, value, threshold, f"generated {what} is {value:.3f} of real audio's")


def _loss_divergence(evidence: Evidence) -> Signal:
    config = evidence.config
    values = series(evidence.history, config.divergence_loss)[1]
    if len(values) < config.min_rows:
        return Signal(detail=f"too few {config.divergence_loss} values to judge")
    recent, best, _ = _windowed(values, config.window)
    if not best > 0:
        return Signal(detail=f"{config.divergence_loss} has no positive windowed mean to compare with")
    ratio = evidence.figures["divergence_ratio"] = recent / best
    severity, threshold = _graded(ratio, config.divergence_ratio, config.divergence_ratio_critical, above=True)
    rows = min(config.window, len(values))
    return Signal(severity, ratio, threshold, f"{config.divergence_loss} mean {recent:.4g} over the last {rows} rows "
                                              f"is {ratio:.2f}x its lowest {best:.4g}")


def _loss_balance(evidence: Evidence) -> Signal:
    config = evidence.config
    weighted: dict[str, list[float]] = {}
    rows = 0
    for row in evidence.window:
        present = {term: evidence.weights[term] * abs(float(row[key])) for term, key in TERM_METRICS.items()
                   if evidence.weights.get(term, 0) > 0 and _number(row.get(key))}
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
    evidence.figures.update({f"share/{term}": share for term, share in shares.items()})
    largest, smallest = max(shares, key=shares.get), min(shares, key=shares.get)
    if shares[largest] > config.balance_max_share:
        return Signal(WARNING, shares[largest], config.balance_max_share,
                      f"{largest} takes {shares[largest]:.2%} of the weighted generator loss; "
                      f"check train.lambdas.{largest}")
    if shares[smallest] < config.balance_min_share:
        return Signal(WARNING, shares[smallest], config.balance_min_share,
                      f"{smallest} takes only {shares[smallest]:.3%} of the weighted generator loss; "
                      f"check train.lambdas.{smallest}")
    return Signal(HEALTHY, shares[largest], config.balance_max_share,
                  f"largest share {shares[largest]:.2%} ({largest})")


def _speaker_similarity(evidence: Evidence) -> Signal:
    config = evidence.config
    values = series(evidence.window, SPEAKER_SIMILARITY)[1]
    if len(values) < config.min_rows:
        return Signal(detail="no speaker conditioning, or too few steps to judge")
    value = evidence.figures[SPEAKER_SIMILARITY] = float(np.mean(values))
    severity = WARNING if value < config.speaker_similarity_min else HEALTHY
    return Signal(severity, value, config.speaker_similarity_min,
                  f"generated audio's speaker embedding has cosine similarity {value:.3f} to its reference's")


JUDGES: dict[str, Callable[[Evidence], Signal]] = {
    "non_finite": _non_finite, "exploding_gradients": _exploding_gradients,
    "vanishing_gradients": _vanishing_gradients, "discriminator_dominance": _discriminator_dominance,
    "discriminator_collapse": _discriminator_collapse, "mode_collapse": _mode_collapse,
    "loss_divergence": _loss_divergence, "loss_balance": _loss_balance, "speaker_similarity": _speaker_similarity,
}
