"""Whether a saved run had converged when it stopped, or was still improving: "healthy" is not "done".

The health signals say whether training is going wrong; this says whether it had finished. It reads
the validation rows of the training log (`{"step": ..., "validation/mel": ...}`) and, when the run
was evaluated, `evaluate/metrics.json`, whose `summary` holds the resynthesis's means and whose
`original.summary` holds the originals' own (the ceiling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unitvox.config.health import HealthConfig
from unitvox.evaluation.registry import EVALUATION_METRICS
from unitvox.health.signals import HEALTHY, STATUS_NAMES, WARNING, Row, json_number, series

VALIDATION_MEL = "validation/mel"
STILL_IMPROVING, CONVERGED, TOO_FEW_CHECKS = "still_improving", "converged", "too_few_checks"
# The evaluation figures set beside the original's: intelligibility, then naturalness and STOI.
HEADLINE_METRICS = ("wer", "cer", "dnsmos_overall", "stoi")


def last_improvement(log: Sequence[Row]) -> int | None:
    """The step of a training log's last improved validation (`validation/improved`), where best.pt was
    saved; None when no row says so."""
    return next((int(row["step"]) for row in reversed(log) if row.get("validation/improved")), None)


@dataclass
class Progress:
    """Where a run stood when it stopped: still improving, converged, or too few validation checks to say."""

    state: str
    severity: int
    detail: str
    figures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "severity": STATUS_NAMES[self.severity], "detail": self.detail,
                "figures": {name: json_number(value) for name, value in sorted(self.figures.items())}}


def judge_progress(log: Sequence[Row], config: HealthConfig, evaluation: Mapping[str, Any] | None = None, *,
                   step: int | None = None) -> Progress:
    """Judge the validation mel error over the last `config.progress_checks` checks, and the evaluation's gap.

    A fall of at least `config.still_improving_fall` (relative) from the first to the last of those
    checks means the run was still improving when it stopped: a warning. The evaluation's figures
    against the original's are added to the detail; they do not change the severity.

    Args:
        log: training-log rows in step order.
        config: the thresholds.
        evaluation: the parsed `evaluate/metrics.json`, when the run was evaluated.
        step: judge the run as it was at this step (default: the last logged step).
    """
    steps, values = series([row for row in log if step is None or row.get("step", 0) <= step], VALIDATION_MEL)
    checks = config.progress_checks
    gap, gap_figures = evaluation_gap(evaluation)
    if len(values) < checks:
        progress = Progress(TOO_FEW_CHECKS, HEALTHY, f"{len(values)} validation checks, too few to tell whether "
                                                     f"the run converged ({checks} needed)")
    else:
        first, last = float(values[-checks]), float(values[-1])
        fall = (first - last) / first if first > 0 else 0.0
        figures = {"progress/validation_mel_fall": fall, "progress/validation_mel_first": first,
                   "progress/validation_mel_last": last}
        span = (f"over the last {checks} checks ({first:.3g} -> {last:.3g}, "
                f"steps {int(steps[-checks])}-{int(steps[-1])})")
        if fall >= config.still_improving_fall:
            progress = Progress(STILL_IMPROVING, WARNING,
                                f"still improving: validation mel fell {fall:.0%} {span}; train longer", figures)
        else:
            change = (last - first) / first if first > 0 else 0.0
            progress = Progress(CONVERGED, HEALTHY, f"converged: validation mel changed {change:+.1%} {span}", figures)
    progress.figures.update(gap_figures)
    if gap:
        progress.detail += f"; evaluation against the original's: {gap}"
    return progress


def evaluation_gap(evaluation: Mapping[str, Any] | None) -> tuple[str, dict[str, float]]:
    """("WER 0.95 (original 0.05), ...", the figures) for the headline metrics evaluated on both sides."""
    if not evaluation:
        return "", {}
    resynthesis = evaluation.get("summary", {})
    original = evaluation.get("original", {}).get("summary", {})
    parts, figures = [], {}
    for name in HEADLINE_METRICS:
        ours, theirs = resynthesis.get(f"{name}_mean"), original.get(f"{name}_mean")
        if not (isinstance(ours, (int, float)) and isinstance(theirs, (int, float))):
            continue  # not scored, or NaN written as null
        figures[f"evaluation/{name}"], figures[f"evaluation_original/{name}"] = float(ours), float(theirs)
        parts.append(f"{EVALUATION_METRICS[name].title} {ours:.2f} (original {theirs:.2f})")
    return ", ".join(parts), figures
