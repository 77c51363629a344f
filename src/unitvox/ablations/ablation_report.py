"""The ablation report: a Markdown table of every variant against the baseline, its curves as a PNG, and
the comparison they are made from, written under ablations/.

Run: unitvox ablate --config jobs/demo.yaml --suite jobs/ablations/speaker.yaml --run ./runs/ablate-speaker --compare-only
"""

from __future__ import annotations

import json

from unitvox.ablations.compare import CURVES, Comparison, VariantRecord, build_comparison, describe_difference
from unitvox.ablations.plan import Plan
from unitvox.ablations.suite import Variant
from unitvox.evaluation.registry import EVALUATION_METRICS
from unitvox.layout import ABLATION_COMPARISON as COMPARISON, ABLATION_CURVES as CURVES_PNG, ABLATION_REPORT as REPORT
from unitvox.report import grid, new_figure, png_bytes
from unitvox.store import Store
# The report's columns, in this order, when any variant has them.
TABLE_METRICS = ("validation/mel_best", "validation/mel_final", "loss/mel", "loss/gen_total",
                 *(f"evaluate/{name}" for name in EVALUATION_METRICS))


def report_markdown(comparison: Comparison, *, curves: bool) -> str:
    """The report: findings, a table of metrics with the change from the baseline, curves, what is missing."""
    finished = [record for record in comparison.variants if record.finished]
    # The judged metric first, the best validation mel error second, then the rest.
    ordered = dict.fromkeys((comparison.settings.key_metric, *TABLE_METRICS))
    columns = [name for name in ordered if any(name in record.metrics for record in finished)]
    lines = [f"# Ablation {comparison.suite}", "", f"Run: `{comparison.run}`", "", "## Findings", ""]
    lines += [f"- {finding}" for finding in comparison.findings]
    lines += ["", "Each variant is one training run: a difference just past the threshold may be seed noise; "
                  "confirm it with another `train.seed`."]
    lines += ["", "## Variants", "",
              "Each cell is the value and, in brackets, its change from the baseline (in dB for decibels). "
              f"Losses are the mean of the last {comparison.settings.final_log_rows} logged steps.", ""]
    lines.append("| variant | changes | steps | " + " | ".join(columns) + " | verdict | health |")
    lines.append("|" + "---|" * (len(columns) + 5))
    for record in finished:
        cells = [_cell(record, name) for name in columns]
        verdict = f"{record.verdict} ({record.direction})" if record.verdict == "matters" else record.verdict
        lines.append(f"| {record.name} | {_changes(record)} | {record.steps} | " + " | ".join(cells)
                     + f" | {verdict} | {_health(record)} |")
    if curves:
        lines += ["", "## Curves", "", "![training and validation curves of every variant](curves.png)"]
    if comparison.missing:
        lines += ["", "## Not compared", ""]
        lines += [f"- {record.name}: {record.status} ({_changes(record)})" for record in comparison.missing]
    lines += ["", "Machine-readable: `comparison.json`. Rebuild: `unitvox ablate ... --compare-only`.", ""]
    return "\n".join(lines)


def _cell(record: VariantRecord, name: str) -> str:
    value = record.metrics.get(name)
    if value is None:
        return ""
    difference = describe_difference(record, name)
    return f"{value:.4g}" + (f" ({difference})" if difference else "")


def _changes(record: VariantRecord) -> str:
    return ", ".join(f"`{change}`" for change in Variant(record.name, record.changes).overrides()) or "none"


def _health(record: VariantRecord) -> str:
    if not record.health:
        return ""
    reasons = ", ".join(record.health.get("reasons") or [])
    return f"{record.health.get('status')}" + (f" ({reasons})" if reasons else "")


def curves_png(comparison: Comparison) -> bytes | None:
    """Every finished variant's curves, one panel per series, as PNG bytes; None when nothing was logged."""
    finished = [record for record in comparison.variants if record.finished]
    series = [name for name in CURVES if any(record.curves.get(name) for record in finished)]
    if not series:
        return None
    figure = new_figure(len(series))
    rows, columns = grid(len(series))
    colours = _variant_colours([record.name for record in finished])
    for index, name in enumerate(series):
        axes = figure.add_subplot(rows, columns, index + 1)
        for record in finished:
            points = record.curves.get(name)
            if points:
                steps, values = zip(*points)
                baseline = record.verdict == "baseline"
                axes.plot(steps, values, label=record.name, linewidth=2.4 if baseline else 1.2,
                          color="black" if baseline else colours[record.name], marker="o" if len(points) < 12 else None)
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return png_bytes(figure)


def _variant_colours(names: list[str]) -> dict[str, tuple]:
    """One colour per variant, the same in every panel: tab20's ten dark shades first, then its light ones."""
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    return {name: palette((2 * index) % 20 + (2 * index // 20) % 2) for index, name in enumerate(names)}


def write_comparison(plan: Plan, root: Store) -> Comparison:
    """Build the comparison and write comparison.json, the curves and report.md under `ablations/`."""
    comparison = build_comparison(plan, root)
    root.write_text(COMPARISON, json.dumps(comparison.to_json(), indent=2, allow_nan=False) + "\n")
    png = curves_png(comparison)
    if png is not None:
        root.write_bytes(CURVES_PNG, png)
    root.write_text(REPORT, report_markdown(comparison, curves=png is not None))
    return comparison
