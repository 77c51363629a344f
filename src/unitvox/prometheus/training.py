"""How training-log rows and health reports become catalogue metrics.

A row key such as "grad_norm/mpd" becomes `train_grad_norm{network="mpd"}`: one metric per kind
of figure with a bounded label, rather than a metric name per key, so dashboards can sum and
compare across networks and terms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from unitvox.health.monitor import SIGNALS, HealthReport
from unitvox.prometheus import MetricsSink

# Row key prefix -> (metric, the label its suffix becomes).
_LABELLED = {
    "loss": ("train_loss", "term"),
    "adv_gen": ("train_adversarial_loss", "network"),
    "feature_matching": ("train_feature_matching_loss", "network"),
    "disc": ("train_discriminator_loss", "network"),
    "grad_norm": ("train_grad_norm", "network"),
    "param_norm": ("train_param_norm", "network"),
    "lr": ("train_learning_rate", "network"),
}
_SCORES = {"disc_real": "real", "disc_fake": "generated"}
_PLAIN = {
    "mode/spectral_variance_ratio": "train_spectral_variance_ratio",
    "mode/output_diversity_ratio": "train_output_diversity_ratio",
    "speaker/similarity": "train_speaker_similarity",
    "speed/samples_per_second": "train_samples_per_second",
}
# Shard label of a stage that is not sharded, so its progress has the same labels as a sharded one's.
UNSHARDED = "0"


def series(key: str) -> tuple[str, dict[str, str]] | None:
    """The metric and labels a training-log key is exported as, or None for keys that stay in the log only."""
    if key in _PLAIN:
        return _PLAIN[key], {}
    prefix, _, name = key.partition("/")
    if not name:
        return None
    if prefix in _SCORES:
        return "train_discriminator_score", {"network": name, "side": _SCORES[prefix]}
    if prefix in _LABELLED:
        metric, label = _LABELLED[prefix]
        return metric, {label: name}
    return None


def export_row(sink: MetricsSink, row: Mapping[str, float]) -> None:
    """Set the gauge of every exported figure in one training-log row."""
    for key, value in row.items():
        found = series(key)
        if found is not None:
            sink.gauge(found[0], float(value), **found[1])


def export_progress(sink: MetricsSink, step: int, max_steps: int, epoch: int) -> None:
    """Training's step and epoch, and its progress as stage items (steps done of max_steps)."""
    sink.gauge("train_step", step)
    sink.gauge("train_epoch", epoch)
    sink.gauge("stage_items_done", step, shard=UNSHARDED)
    sink.gauge("stage_items_planned", max_steps, shard=UNSHARDED)


def export_health(sink: MetricsSink, report: HealthReport) -> None:
    """The status, every signal's severity and the figures the alerts and dashboard read."""
    sink.gauge("train_health_status", report.status)
    for name in SIGNALS:
        sink.gauge("train_health_signal", report.signals[name].severity, signal=name)
    sink.increment("train_health_checks_total")
    sink.gauge("train_health_last_check_timestamp_seconds", report.checked_at)
    for key, value in report.figures.items():
        prefix, _, name = key.partition("/")
        if prefix == "score_gap":
            sink.gauge("train_discriminator_score_gap", value, network=name)
        elif prefix == "share":
            sink.gauge("train_loss_share_ratio", value, term=name)
    if "divergence_ratio" in report.figures:
        sink.gauge("train_loss_divergence_ratio", report.figures["divergence_ratio"])


def export_started(sink: MetricsSink) -> None:
    sink.gauge("train_started_timestamp_seconds", time.time())
