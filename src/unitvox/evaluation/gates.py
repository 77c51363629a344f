"""Quality gates over evaluation metrics: parse them from config, check a summary, set the exit code.

A gate is a config key `<metric>[_<statistic>]_<min|max>: threshold`, e.g. `wer_max: 0.5`,
`dnsmos_overall_min: 2.5`, `length_ratio_min: 0.98`, `speaker_similarity_median_min: 0.8`, for any
metric of the registry (`unitvox.evaluation.registry`). The statistic is `mean` unless named; a null
threshold leaves the gate out. Per-utterance rows hold the metrics under their plain names (`wer`,
`snr_db`, ...); `summarise` turns rows into `<metric>_<statistic>` figures, which is what gates read.

The writers are pure functions returning text (JSON, Markdown, JUnit XML); the stage stores it.
"""

from __future__ import annotations

import json
import math
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

from unitvox.evaluation.registry import EVALUATION_METRICS, GATE_COMPARISONS, GATE_STATISTICS
from unitvox.report import json_safe, markdown_table

METRICS = tuple(EVALUATION_METRICS)  # every registered metric can be gated
STATISTICS = GATE_STATISTICS
COMPARISONS = GATE_COMPARISONS

Comparison = Literal["min", "max"]


@dataclass(frozen=True)
class Gate:
    """A bound on one summary figure: `comparison` "min" means value >= threshold, "max" value <= threshold."""

    metric: str
    comparison: Comparison
    threshold: float
    statistic: str = "mean"

    @property
    def key(self) -> str:
        """The config key this gate comes from, e.g. `snr_db_min` or `wer_median_max`."""
        middle = "" if self.statistic == "mean" else f"_{self.statistic}"
        return f"{self.metric}{middle}_{self.comparison}"

    @property
    def summary_key(self) -> str:
        """The figure of `summarise`'s output that this gate reads, e.g. `snr_db_mean`."""
        return f"{self.metric}_{self.statistic}"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate; `value` is NaN when the figure was missing or NaN."""

    gate: Gate
    passed: bool
    value: float
    message: str

    @property
    def name(self) -> str:
        return self.gate.key

    @property
    def threshold(self) -> float:
        return self.gate.threshold


def gates_from_config(mapping: Mapping[str, Any]) -> list[Gate]:
    """Gates from a config mapping such as `{"wer_max": 0.5, "stoi_min": 0.7}`; null values are skipped.

    Raises:
        ValueError: a key names no known metric, statistic or comparison, a threshold is not a
            finite number, or a metric's min is above its max. The message names the key.
    """
    gates = [_parse_gate(key, threshold) for key, threshold in mapping.items() if threshold is not None]
    _check_bounds_are_consistent(gates)
    return gates


def evaluate_gates(summary: Mapping[str, float], gates: list[Gate]) -> list[GateResult]:
    """Check every gate against `summary`; a gate whose figure is missing or NaN fails, saying so."""
    return [_evaluate_gate(summary, gate) for gate in gates]


def gates_exit_code(gate_results: list[GateResult]) -> int:
    """0 when every gate passed (or there are none), 1 when any failed: for CI."""
    return 0 if all(result.passed for result in gate_results) else 1


def summarise(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Mean and median of every numeric per-utterance metric, ignoring NaN.

    Returns:
        `count` (rows), and for each numeric key `k` found in any row: `k_mean`, `k_median`,
        `k_count` (rows with a number that is not NaN) and `k_nan_count` (rows where it is NaN or
        absent). Mean and median are NaN when no row has a value. Strings (utterance ids) and
        booleans are not metrics and are skipped.
    """
    summary: dict[str, float] = {"count": len(rows)}
    for key in _numeric_keys(rows):
        values = [float(row[key]) for row in rows if _is_number(row.get(key)) and not math.isnan(row[key])]
        summary[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
        summary[f"{key}_median"] = statistics.median(values) if values else math.nan
        summary[f"{key}_count"] = len(values)
        summary[f"{key}_nan_count"] = len(rows) - len(values)
    return summary


def metrics_json(
    rows: list[Mapping[str, Any]], summary: Mapping[str, float], gate_results: list[GateResult],
    *, original: Mapping[str, Any] | None = None, notes: list[str] = (),
) -> str:
    """The full evaluation as JSON text: overall verdict, gates, summary and per-utterance rows.

    `original` (its own "summary" and "utterances") holds the originals' figures, the ceiling; `notes`
    say which listeners scored and what the reference transcripts were. NaN and infinities become
    null, since JSON has no such numbers.
    """
    document = {
        "passed": gates_exit_code(gate_results) == 0,
        "gates": [_gate_record(result) for result in gate_results],
        "summary": dict(summary),
        "utterances": [dict(row) for row in rows],
    }
    if original is not None:
        document["original"] = dict(original)
    if notes:
        document["notes"] = list(notes)
    return json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n"


def summary_markdown(
    summary: Mapping[str, float],
    gate_results: list[GateResult],
    rows: list[Mapping[str, Any]],
    title: str = "Vocoder evaluation",
    *,
    worst_count: int = 5,
    id_key: str = "utterance",
    original_summary: Mapping[str, float] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """A Markdown report: the verdict, a gate table (PASS/FAIL), a summary table, the worst utterances by SNR.

    Args:
        summary: output of `summarise`.
        gate_results: output of `evaluate_gates`.
        rows: per-utterance metrics; `id_key` names the column that identifies an utterance.
        title: the report's heading.
        worst_count: how many utterances the worst-SNR table lists.
        id_key: row key of the utterance identifier.
        original_summary: `summarise` of the originals' own rows: a column beside the resynthesis.
        notes: lines under the summary table (listeners, reference transcripts).
    """
    lines = [f"# {title}", "", _verdict(gate_results), "", "## Gates", ""]
    gate_rows = [[result.name, "PASS" if result.passed else "FAIL", result.message] for result in gate_results]
    lines += markdown_table(["gate", "result", "detail"], gate_rows) if gate_rows else ["No gates configured."]
    lines += ["", f"## Summary ({summary.get('count', len(rows))} utterances)", ""]
    lines += _summary_table(summary, original_summary or {})
    lines += [f"\n{note}" for note in notes]
    lines += ["", "## Worst utterances by SNR", ""]
    lines += _worst_by_snr(rows, worst_count, id_key)
    return "\n".join(lines) + "\n"


def junit_xml(gate_results: list[GateResult], suite_name: str = "unitvox.evaluate") -> str:
    """JUnit XML with one test case per gate, so CI systems show each gate as a test.

    Failed gates carry a <failure> with the gate's message; passed ones put it in <system-out>.
    """
    failures = str(sum(not result.passed for result in gate_results))
    counts = {"tests": str(len(gate_results)), "failures": failures, "errors": "0"}
    root = ET.Element("testsuites", name=suite_name, **counts)
    suite = ET.SubElement(root, "testsuite", name=suite_name, skipped="0", **counts)
    for result in gate_results:
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=result.name, time="0")
        if result.passed:
            ET.SubElement(case, "system-out").text = result.message
        else:
            ET.SubElement(case, "failure", message=result.message, type="QualityGateFailure").text = result.message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _parse_gate(key: str, threshold: Any) -> Gate:
    stem, _, comparison = key.rpartition("_")
    if comparison not in COMPARISONS:
        raise ValueError(f"gate {key!r}: the key must end in _min or _max (e.g. stoi_min, wer_max)")
    metric, statistic = _split_metric(key, stem)
    if not _is_number(threshold) or not math.isfinite(threshold):
        raise ValueError(f"gate {key!r}: threshold must be a finite number, got {threshold!r}")
    return Gate(metric=metric, comparison=comparison, threshold=float(threshold), statistic=statistic)


def _split_metric(key: str, stem: str) -> tuple[str, str]:
    """(metric, statistic) from a key's stem such as `snr_db` or `snr_db_median`."""
    for metric in METRICS:
        if stem == metric:
            return metric, "mean"
        for statistic in STATISTICS:
            if stem == f"{metric}_{statistic}":
                return metric, statistic
    raise ValueError(
        f"gate {key!r}: unknown metric {stem!r}; gates exist for {', '.join(METRICS)}, "
        f"optionally followed by _{' or _'.join(STATISTICS)}"
    )


def _check_bounds_are_consistent(gates: list[Gate]) -> None:
    lower_bounds = {gate.summary_key: gate for gate in gates if gate.comparison == "min"}
    for upper in (gate for gate in gates if gate.comparison == "max"):
        lower = lower_bounds.get(upper.summary_key)
        if lower is not None and lower.threshold > upper.threshold:
            raise ValueError(
                f"gate {lower.key!r} = {lower.threshold:g} is above {upper.key!r} = {upper.threshold:g}: "
                "no value could pass both"
            )


def _evaluate_gate(summary: Mapping[str, float], gate: Gate) -> GateResult:
    value = summary.get(gate.summary_key)
    if not _is_number(value):
        return GateResult(gate, False, math.nan, (
            f"{gate.summary_key} is missing from the summary: no utterance reported {gate.metric}"
        ))
    value = float(value)
    if math.isnan(value):
        return GateResult(gate, False, value, f"{gate.summary_key} is NaN: no utterance gave a usable {gate.metric}")
    if gate.comparison == "min":
        passed = value >= gate.threshold
        relation = "is at least the minimum" if passed else "is below the minimum"
    else:
        passed = value <= gate.threshold
        relation = "is at most the maximum" if passed else "is above the maximum"
    return GateResult(gate, passed, value, f"{gate.summary_key} = {value:.4g} {relation} {gate.threshold:g}")


def _numeric_keys(rows: list[Mapping[str, Any]]) -> list[str]:
    """Keys holding a number in at least one row, in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update((key, None) for key, value in row.items() if _is_number(value))
    return list(keys)


def _is_number(value: Any) -> bool:
    """True for ints, floats and numpy scalars, but not booleans (a flag is not a metric)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _gate_record(result: GateResult) -> dict[str, Any]:
    gate = result.gate
    return {
        "name": gate.key, "metric": gate.metric, "statistic": gate.statistic, "comparison": gate.comparison,
        "threshold": gate.threshold, "value": result.value, "passed": result.passed, "message": result.message,
    }


def _verdict(gate_results: list[GateResult]) -> str:
    failed = sum(not result.passed for result in gate_results)
    if failed:
        return f"Result: FAIL ({failed} of {len(gate_results)} gates failed)"
    return f"Result: PASS ({len(gate_results)} of {len(gate_results)} gates passed)"


def _summary_table(summary: Mapping[str, float], original: Mapping[str, float]) -> list[str]:
    """Registered metrics first (with their direction and the original's mean), then any other figure."""
    metrics = [key.removesuffix("_mean") for key in summary if key.endswith("_mean")]
    metrics = [m for m in EVALUATION_METRICS if m in metrics] + [m for m in metrics if m not in EVALUATION_METRICS]
    body = [
        [metric, EVALUATION_METRICS[metric].direction if metric in EVALUATION_METRICS else "",
         original.get(f"{metric}_mean"),
         *(summary.get(f"{metric}_{part}") for part in ("mean", "median", "count", "nan_count"))]
        for metric in metrics
    ]
    return markdown_table(["metric", "better", "original (mean)", "mean", "median", "count", "NaN or missing"], body)


def _worst_by_snr(rows: list[Mapping[str, Any]], count: int, id_key: str) -> list[str]:
    """Table of the `count` rows with the lowest SNR; rows without a usable SNR come first."""
    if not any(_is_number(row.get("snr_db")) for row in rows):
        return ["No utterance reported snr_db."]

    def snr_or_minus_infinity(row: Mapping[str, Any]) -> float:
        snr = row.get("snr_db")
        return -math.inf if not _is_number(snr) or math.isnan(snr) else float(snr)

    worst = sorted(rows, key=snr_or_minus_infinity)[:count]
    columns = _numeric_keys(worst)
    return markdown_table([id_key, *columns], [[row.get(id_key, "?"), *(row.get(key) for key in columns)] for row in worst])
