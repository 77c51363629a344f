"""Every metric unitvox exports, in one place: name, type, help, unit and labels.

Sinks refuse names that are not here, and tests check the Grafana dashboard and the alert rules
in k8s/ against this table, so a renamed metric cannot silently empty a panel or mute an alert.
Importable without prometheus_client.

Conventions (Prometheus naming): the `unitvox_` prefix is added by the sink; base units (`_seconds`,
`_bytes`); ratios from 0 to 1 end in `_ratio`; counters end in `_total`; `run`, `stage` and
`variant` are labels of every series, and any other label has a small, fixed set of values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from unitvox.evaluation.registry import EVALUATION_METRICS

PREFIX = "unitvox_"
BASE_LABELS = ("run", "stage", "variant")
KINDS = ("gauge", "counter")


class UnknownMetric(ValueError):
    """A metric name, or a label of it, that the catalogue does not define."""


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric; `name` is the base name, `PREFIX + name` the exported one."""

    name: str
    kind: str
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()

    @property
    def exported(self) -> str:
        return PREFIX + self.name


def _gauge(name: str, help_text: str, unit: str = "", labels: Iterable[str] = ()) -> MetricSpec:
    return MetricSpec(name, "gauge", help_text, unit, tuple(labels))


def _counter(name: str, help_text: str, labels: Iterable[str] = ()) -> MetricSpec:
    return MetricSpec(name, "counter", help_text, "", tuple(labels))


_SPECS = (
    # Every run and stage
    _gauge("run_info", "Always 1; its labels describe the run: stage config hash, unitvox version, git commit, image.",
           labels=("config_hash", "version", "git_commit", "image")),
    _gauge("stage_items_done", "Items this stage shard has finished (files, segments, training steps).",
           labels=("shard",)),
    # Not `_items_total`: Prometheus keeps the _total suffix for counters, and this is a gauge.
    _gauge("stage_items_planned", "Items this stage shard has to do in all.", labels=("shard",)),
    _gauge("stage_duration_seconds", "Wall time of the last run of a stage phase on a shard.", "seconds",
           labels=("phase", "shard")),
    _gauge("stage_last_success_timestamp_seconds", "Unix time the stage last finished its final phase.", "seconds"),
    _counter("store_retries_total", "Object-store requests and transfers tried again, by why: body (a response "
             "broke while read), connection, throttled (503 SlowDown, 429), server (5xx).", labels=("kind",)),
    # Stage results (pushed to the Pushgateway by short jobs)
    _gauge("prepare_segments", "Segments prepare kept or rejected.", labels=("outcome",)),
    _gauge("prepare_kept_audio_seconds", "Duration of the audio prepare kept.", "seconds"),
    _gauge("tokenize_units_used", "Codebook units that occur at least once in the corpus."),
    _gauge("tokenize_unit_perplexity", "Perplexity of the unit distribution (k when every unit is equally used)."),
    # (the evaluation figures, one gauge per metric of the evaluation registry, follow the table)
    _gauge("evaluate_gates_passed", "1 when every quality gate passed, else 0."),
    # Training figures, per logged step
    _gauge("train_step", "The training step reached."),
    _gauge("train_epoch", "The training epoch reached."),
    _gauge("train_samples_per_second", "Training examples (segments) per second over all ranks."),
    _gauge("train_loss", "A training loss term, unweighted (gen_total is the weighted generator total).",
           labels=("term",)),
    _gauge("train_adversarial_loss", "The generator's adversarial loss against one discriminator.",
           labels=("network",)),
    _gauge("train_feature_matching_loss", "The feature-matching loss against one discriminator.", labels=("network",)),
    _gauge("train_discriminator_loss", "One discriminator's least-squares loss.", labels=("network",)),
    _gauge("train_discriminator_score", "Mean discriminator output on real or generated audio (targets 1 and 0).",
           labels=("network", "side")),
    _gauge("train_grad_norm", "Gradient norm of one network before clipping.", labels=("network",)),
    _gauge("train_param_norm", "Parameter norm of one network.", labels=("network",)),
    _gauge("train_learning_rate", "Current learning rate of one network's optimizer.", labels=("network",)),
    _gauge("train_spectral_variance_ratio", "Generated log-mel variance over real audio's (near 0: mode collapse)."),
    _gauge("train_output_diversity_ratio", "Spread between outputs for different inputs over real audio's spread."),
    _gauge("train_speaker_similarity", "Cosine similarity of generated audio's speaker embedding to its reference's."),
    _gauge("train_validation_mel_loss", "Mean mel L1 error on the validation items."),
    _gauge("train_started_timestamp_seconds", "Unix time this training process started.", "seconds"),
    _gauge("train_last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint written.", "seconds"),
    # Training health, per check
    _gauge("train_health_status", "Training health: 0 healthy, 1 warning, 2 critical."),
    _gauge("train_health_signal", "Severity of one health signal: 0 healthy, 1 warning, 2 critical.",
           labels=("signal",)),
    _counter("train_health_checks_total", "Health checks run by this process."),
    _gauge("train_health_last_check_timestamp_seconds", "Unix time of the last health check.", "seconds"),
    _gauge("train_discriminator_score_gap", "Mean D(real) - D(generated) over the health window (near 1: dominance).",
           labels=("network",)),
    _gauge("train_loss_share_ratio", "A weighted generator loss term's share of the weighted total.", "ratio",
           labels=("term",)),
    _gauge("train_loss_divergence_ratio", "Recent mean of the watched loss over its lowest windowed mean."),
)

# Evaluation figures: derived from the metric registry, so a new metric is exported without an edit
# here. `audio` is resynthesis or original (the original's own figure: the ceiling).
# Only ratios carry a unit here (the catalogue's units are Prometheus base units; decibels, cents and MOS
# are spelt in the gauge's name instead, as evaluate_snr_decibels always was).
_UNITS = {"ratio": "ratio"}
_SPECS += tuple(
    _gauge(metric.gauge, f"Mean {metric.title} of held-out audio ({metric.direction}): {metric.help}",
           _UNITS.get(metric.unit, ""), labels=("audio",))
    for metric in EVALUATION_METRICS.values()
)

CATALOGUE: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


def lookup(name: str, kind: str, labels: Iterable[str]) -> MetricSpec:
    """The spec of `name`, after checking it is a `kind` and that `labels` are exactly what it takes.

    Args:
        name: the base name, without the `unitvox_` prefix.
        kind: "gauge" or "counter", as the caller uses it.
        labels: the label names of the call; the base labels (run, stage, variant) may be among them.

    Raises:
        UnknownMetric: the name is not in the catalogue, is another kind, or the labels differ.
    """
    spec = CATALOGUE.get(name)
    if spec is None:
        raise UnknownMetric(f"metric {name!r} is not in unitvox.prometheus.catalogue; add it there (name, type, help, "
                            "unit, labels) before exporting it")
    if spec.kind != kind:
        raise UnknownMetric(f"metric {name!r} is a {spec.kind} in the catalogue, not a {kind}")
    given = set(labels) - set(BASE_LABELS)
    if given != set(spec.labels):
        raise UnknownMetric(f"metric {name!r} takes labels {sorted(spec.labels)} (besides {list(BASE_LABELS)}), "
                            f"got {sorted(given)}")
    return spec


def exported_names() -> set[str]:
    """Every series name a scrape can show for the catalogue's metrics."""
    return {spec.exported for spec in _SPECS}
