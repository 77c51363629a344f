"""Compare an ablation's variants: final and best metrics, the difference from the baseline, and which
components matter.

Run: unitvox ablate --config jobs/demo.yaml --suite jobs/ablations/speaker.yaml --run ./runs/ablate-speaker --compare-only
ablation_report.py writes it as ablations/comparison.json, report.md and curves.png under the run root.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from unitvox.ablations.plan import Plan
from unitvox.ablations.suite import (
    DECIBEL_METRICS, DEFAULT_KEY_METRICS, VALIDATION_MEL_BEST, ComparisonSettings, Variant,
)
from unitvox.evaluation.registry import EVALUATION_METRICS
from unitvox.health.progress import last_improvement
from unitvox.layout import (
    CONFIG, EVALUATE_METRICS, HEALTH_LATEST as HEALTH, TRAINING_LOG as LOG, ablation_variant, success,
)
from unitvox.report import json_safe
from unitvox.store import Store

TRAIN_SUCCESS = success("train")
# Per-utterance means from evaluate/metrics.json, reported as `evaluate/<name>`.
EVALUATED = tuple(EVALUATION_METRICS)  # every registered metric
# Training-log series drawn in curves.png, when any variant logged them.
CURVES = ("loss/mel", "validation/mel", "loss/gen_total", "loss/disc", "loss/contrastive")

FINISHED = "finished"
# Keys whose change only the adversarial steps can show: with both variants' best checkpoints from the
# generator-only warm-up (train.generator_warmup_steps), a difference in these is invisible.
GAN_KEYS = ("train.lambdas.adversarial", "train.lambdas.feature_matching", "train.discriminator",
            "train.lr_discriminator")


@dataclass
class VariantRecord:
    """What one variant left behind, and how it compares with the baseline.

    `status` is `finished`, or why it is not compared: `not started`, `training not finished`,
    `stopped by the health monitor: <reasons>`, `trained with another config`. `verdict` is `baseline`, `matters`, `within noise` or `unknown`.
    """

    name: str
    changes: dict[str, Any]
    status: str
    steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    health: dict[str, Any] | None = None
    differences: dict[str, dict[str, float | None]] = field(default_factory=dict)
    verdict: str | None = None
    direction: str | None = None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    best_step: int | None = None
    warmup_steps: int = 0

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "changes": self.changes, "steps": self.steps,
                "metrics": self.metrics, "difference_from_baseline": self.differences, "verdict": self.verdict,
                "direction": self.direction, "health": self.health, "best_step": self.best_step,
                "generator_warmup_steps": self.warmup_steps}


@dataclass
class Comparison:
    suite: str
    run: str
    settings: ComparisonSettings
    baseline: str
    variants: list[VariantRecord]
    best: str | None = None
    findings: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[VariantRecord]:
        return [record for record in self.variants if not record.finished]

    def to_json(self) -> dict[str, Any]:
        settings = self.settings
        return json_safe({
            "suite": self.suite, "run": self.run, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {"baseline": self.baseline, "key_metric": settings.key_metric,
                         "lower_is_better": settings.lower_is_better, "noise_threshold": settings.noise_threshold,
                         "noise_threshold_db": settings.noise_threshold_db, "final_log_rows": settings.final_log_rows},
            "best_variant": self.best, "findings": self.findings,
            "variants": [record.to_json() for record in self.variants],
            "missing": {record.name: record.status for record in self.missing},
        })


# ---------------------------------------------------------------------------------------------
# What each variant left behind


def training_metrics(rows: list[dict[str, Any]], final_log_rows: int) -> tuple[dict[str, float], dict]:
    """Best and final validation mel, and each loss averaged over the last `final_log_rows` logged steps.

    Returns:
        The metrics (`validation/mel_best`, `validation/mel_final`, `loss/<term>`) and the curves
        ({series: [(step, value), ...]}) of the CURVES series.
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for name, value in row.items():
            if (name.startswith("loss/") or name == "validation/mel") and _finite(value):
                curves.setdefault(name, []).append((int(row["step"]), float(value)))
    metrics: dict[str, float] = {}
    validation = [value for _, value in curves.get("validation/mel", [])]
    if validation:
        metrics["validation/mel_best"] = min(validation)
        metrics["validation/mel_final"] = validation[-1]
    for name in sorted(curves):
        if name.startswith("loss/"):
            last = [value for _, value in curves[name][-final_log_rows:]]
            metrics[name] = sum(last) / len(last)
    return metrics, {name: points for name, points in curves.items() if name in CURVES}


def best_step(rows: list[dict[str, Any]], validation: list[tuple[int, float]]) -> int | None:
    """Where best.pt, which evaluate scores, was saved: the log's last improved validation (the lowest
    validation mel error of the adversarial phase once there is one); for a log without the flags, the
    lowest validation mel error."""
    improved = last_improvement(rows)
    if improved is not None:
        return improved
    return min(validation, key=lambda point: point[1])[0] if validation else None


def evaluation_metrics(document: dict[str, Any]) -> dict[str, float]:
    summary = document.get("summary", {})
    return {f"evaluate/{name}": float(summary[f"{name}_mean"]) for name in EVALUATED
            if _finite(summary.get(f"{name}_mean"))}


def collect(plan: Plan, root: Store, variant: Variant) -> VariantRecord:
    """Read one variant's area: its training log, evaluation and health, if it has finished."""
    own = root.child(ablation_variant(variant.name))
    record = VariantRecord(variant.name, dict(variant.changes), "not started")
    if not own.exists(TRAIN_SUCCESS):
        health = own.read_json(HEALTH) if own.exists(HEALTH) else {}
        if health.get("status") == "critical":
            record.status = f"stopped by the health monitor: {', '.join(health.get('reasons', []))}"
        elif own.exists(LOG) or own.exists(CONFIG):
            record.status = "training not finished"
        return record
    if own.read_json(TRAIN_SUCCESS).get("config_hash") != plan.configs[variant.name].stage_hash("train"):
        record.status = "trained with another config"
        return record
    record.status = FINISHED
    rows = list(own.read_jsonl(LOG))
    record.steps = max((int(row["step"]) for row in rows), default=0)
    record.metrics, record.curves = training_metrics(rows, plan.suite.compare.final_log_rows)
    record.best_step = best_step(rows, record.curves.get("validation/mel", []))
    record.warmup_steps = plan.configs[variant.name].train.generator_warmup_steps
    if own.exists(EVALUATE_METRICS):
        record.metrics.update(evaluation_metrics(own.read_json(EVALUATE_METRICS)))
    if own.exists(HEALTH):
        health = own.read_json(HEALTH)
        record.health = {"status": health.get("status"), "reasons": health.get("reasons", [])}
    return record


# ---------------------------------------------------------------------------------------------
# Judging


def choose_key_metric(settings: ComparisonSettings, records: list[VariantRecord]) -> ComparisonSettings:
    """The settings with their key metric decided: the suite's, else the first of DEFAULT_KEY_METRICS
    every finished variant has (what a listener hears before what the loss says), else the best validation mel."""
    if settings.key_metric:
        return settings
    finished = [record for record in records if record.finished]
    key = next((name for name in DEFAULT_KEY_METRICS
                if finished and all(name in record.metrics for record in finished)), VALIDATION_MEL_BEST)
    return dataclasses.replace(settings, key_metric=key)


def predates_difference(record: VariantRecord, baseline: VariantRecord) -> str | None:
    """Why `record` and `baseline` cannot be told apart, or None: they differ in a GAN key (GAN_KEYS)
    and both best checkpoints, which evaluate scores, come from the generator-only warm-up, before
    any adversarial step."""
    changed = {key for key in {*record.changes, *baseline.changes}
               if record.changes.get(key) != baseline.changes.get(key)}
    gan = [key for key in changed if any(key == name or key.startswith(f"{name}.") for name in GAN_KEYS)]
    steps = (baseline.best_step, record.best_step)
    if not gan or None in steps:
        return None
    if not all(step <= warmup for step, warmup in zip(steps, (baseline.warmup_steps, record.warmup_steps))):
        return None
    warmups = sorted({baseline.warmup_steps, record.warmup_steps})
    return (f"both best checkpoints come from the generator-only warm-up (steps {steps[0]}, {steps[1]} <= warm-up "
            f"{'/'.join(map(str, warmups))}): the comparison cannot see the GAN ({', '.join(sorted(gan))})")


def judge(records: list[VariantRecord], baseline_name: str, settings: ComparisonSettings) -> str | None:
    """Fill in each finished variant's differences and verdict; returns the best variant's name."""
    baseline = next((r for r in records if r.name == baseline_name and r.finished), None)
    key = settings.key_metric
    for record in records:
        if not record.finished:
            continue
        if record is baseline:
            record.verdict = "baseline"
            continue
        if baseline is None:
            record.verdict = "unknown"
            continue
        record.differences = {name: _difference(name, value, baseline.metrics[name])
                              for name, value in record.metrics.items() if name in baseline.metrics}
        if predates_difference(record, baseline):
            record.verdict = "unknown"
            continue
        difference = record.differences.get(key, {})
        if settings.in_decibels:
            size, threshold = difference.get("absolute"), settings.noise_threshold_db
        else:
            size, threshold = difference.get("relative"), settings.noise_threshold
        if size is None:
            record.verdict = "unknown"
            continue
        improved = size < 0 if settings.lower_is_better else size > 0
        record.verdict = "matters" if abs(size) > threshold else "within noise"
        record.direction = "better" if improved else "worse"
    scored = [r for r in records if r.finished and key in r.metrics]
    if not scored:
        return None
    pick = min if settings.lower_is_better else max
    return pick(scored, key=lambda r: r.metrics[key]).name


def _difference(name: str, value: float, baseline: float) -> dict[str, float | None]:
    """The change from the baseline, and as a share of it (None for decibels and a zero baseline)."""
    relative = (value - baseline) / abs(baseline) if baseline and name not in DECIBEL_METRICS else None
    return {"absolute": value - baseline, "relative": relative}


def findings(comparison: Comparison) -> list[str]:
    """Plain sentences: the best variant, which components matter and which way, what is missing."""
    settings, key = comparison.settings, comparison.settings.key_metric
    which_way = "lower" if settings.lower_is_better else "higher"
    lines = [f"Judged on {key} ({which_way} is better) against {comparison.baseline}, "
             f"with differences under {settings.describe_threshold()} counted as noise."]
    if key != VALIDATION_MEL_BEST:
        lines[0] += f" {VALIDATION_MEL_BEST} is a secondary column."
    baseline = next((r for r in comparison.variants if r.verdict == "baseline"), None)
    if comparison.best is not None:
        best = next(r for r in comparison.variants if r.name == comparison.best)
        lines.append(f"Best variant: {best.name} ({key} {best.metrics[key]:.4g}).")
    if baseline is None:
        lines.append(f"No differences: the baseline variant {comparison.baseline} has not finished.")
    for record in comparison.variants:
        if record.verdict in ("matters", "within noise"):
            lines.append(_verdict_sentence(record, baseline, key))
        elif record.verdict == "unknown" and baseline is not None:
            blind = predates_difference(record, baseline)
            lines.append(f"{record.name}: cannot judge, {blind}." if blind
                         else f"{record.name}: cannot judge, no {key} in it or in {baseline.name}.")
    if comparison.missing:
        lines.append("Not compared: " + ", ".join(f"{r.name} ({r.status})" for r in comparison.missing) + ".")
    return lines


def _verdict_sentence(record: VariantRecord, baseline: VariantRecord, key: str) -> str:
    value, reference = record.metrics[key], baseline.metrics[key]
    change = ", ".join(Variant(record.name, record.changes).overrides()) or "no change"
    if record.verdict == "matters":
        return (f"{record.name} matters: {key} {value:.4g} is {describe_difference(record, key, signed=False)} "
                f"{record.direction} than {baseline.name}'s {reference:.4g} ({change}).")
    return (f"{record.name} does not measurably matter: {key} {value:.4g} is within the noise threshold of "
            f"{baseline.name}'s {reference:.4g} ({describe_difference(record, key)}; {change}).")


def describe_difference(record: VariantRecord, name: str, *, signed: bool = True) -> str:
    """`+12.5%`, or `-1.3 dB` for decibels; empty when there is no difference to show."""
    difference = record.differences.get(name, {})
    relative, absolute = difference.get("relative"), difference.get("absolute")
    if relative is not None:
        return f"{relative:+.1%}" if signed else f"{abs(relative):.1%}"
    if absolute is not None and name in DECIBEL_METRICS:
        return f"{absolute:+.2f} dB" if signed else f"{abs(absolute):.2f} dB"
    return ""


# ---------------------------------------------------------------------------------------------
# The whole comparison


def build_comparison(plan: Plan, root: Store) -> Comparison:
    """Compare the selected variants and the baseline, from whatever they have written so far."""
    suite = plan.suite
    wanted = set(plan.selected) | {suite.baseline}
    records = [collect(plan, root, variant) for variant in suite.variants if variant.name in wanted]
    settings = choose_key_metric(suite.compare, records)
    comparison = Comparison(suite.name, root.uri, settings, suite.baseline, records)
    comparison.best = judge(records, suite.baseline, settings)
    comparison.findings = findings(comparison)
    return comparison


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
