"""The human side of `diagnose data`: Markdown sections and PNG plots of levels, flags and SNR."""

from __future__ import annotations

from typing import Any

import numpy as np

from unitvox.config import Config
from unitvox.diagnostics.data.levels import FIGURES, FLAG_RULES, FLAGS, UNREADABLE, Tally
from unitvox.diagnostics.diagnosis import figure_link
from unitvox.report import markdown_table, new_figure, png_bytes

DISTRIBUTIONS_PNG = "distributions.png"
SNR_PNG = "snr_levels.png"
# Rows of the flagged-files table in report.md; files.jsonl and report.json list them all.
SHOWN_FILES = 50
FILE_COLUMNS = ("duration", "rms_db", "peak_db", "silence_ratio", "padding_ratio", "clipped_ratio")
# The histograms: figure and axis label.
HISTOGRAMS = (
    ("duration", "duration (s)"),
    ("rms_db", "RMS level (dBFS)"),
    ("silence_ratio", "share of silent frames"),
    ("padding_ratio", "share of the training window that is padding"),
)


def thresholds(config: Config, window: float) -> list[tuple[str, str, str]]:
    """(flag, rule, config key) for every flag, and the training window padding is measured against."""
    settings = config.diagnose.data
    rows = [(flag, f"{figure} {comparison} {getattr(settings, key):g}", f"diagnose.data.{key}")
            for flag, (figure, comparison, key) in FLAG_RULES.items()]
    rows.append(("(padding)", f"training window {window:g} s", "train.segment_seconds"))
    return rows


def sections(config: Config, tally: Tally, context: dict[str, Any], flagged: list[dict], validation: list[dict],
             recommendation: list[str], snr: dict[str, Any] | None, figures: dict[str, bytes]) -> list[str]:
    """report.md's sections after the findings."""
    read = ["## What was read", "", f"- Files: {context['what']}."]
    if context["validation_source"]:
        read.append(f"- Validation: {context['validation_source']}.")
    stopped = f" (diagnose.data.max_items {context['max_items']} stopped it)" if context["stopped"] else ""
    read += [
        f"- Read {context['read']} files{stopped}.",
        f"- Silent frames: {config.prepare.split.frame_seconds:g} s frames below prepare.split.silence_db "
        f"{config.prepare.split.silence_db:g} dBFS; clipped: samples at or above prepare.checks.clip_level "
        f"{config.prepare.checks.clip_level:g}.",
        "", *markdown_table(["flag", "rule", "config key"],
                            [list(row) for row in thresholds(config, context["window"])]),
    ]
    found = [section_text(read), _summary_section(tally)]
    found.append(_files_section("Flagged files", flagged, "No file is flagged."))
    if validation:
        found.append(_files_section("Validation files", validation, ""))
    found.append(section_text(["## Recommendation", "", *recommendation]))
    if snr is not None:
        found.append(_snr_section(snr, config))
    if figures:
        captions = {DISTRIBUTIONS_PNG: "duration, RMS, silence and padding of every file read, with the thresholds",
                    SNR_PNG: "evaluation SNR against input RMS, and output against input RMS"}
        found.append(section_text(["## Plots", "", *(figure_link(name, captions[name]) for name in sorted(figures))]))
    return found


def section_text(lines: list[str]) -> str:
    return "\n".join(lines)


def _summary_section(tally: Tally) -> str:
    summary = tally.summary()
    lines = ["## Summary", ""]
    lines += markdown_table(["", *summary], [
        ["files", *(part["files"] for part in summary.values())],
        ["hours", *(part["hours"] for part in summary.values())],
        ["flagged files", *(part["flagged"] for part in summary.values())],
        *([flag, *(part["flags"][flag] for part in summary.values())] for flag in (*FLAGS, UNREADABLE)),
    ])
    for split, part in summary.items():
        lines += ["", f"Figures of the {split} files:", ""]
        lines += markdown_table(["figure", "min", "10%", "median", "90%", "max"],
                                [[name, *part["figures"][name].values()] for name in FIGURES])
    return section_text(lines)


def _files_section(title: str, rows: list[dict], empty: str) -> str:
    if not rows:
        return section_text([f"## {title}", "", empty])
    shown = rows[:SHOWN_FILES]
    lines = [f"## {title}", ""]
    lines += markdown_table(["id", "split", *FILE_COLUMNS, "flags"],
                            [[row["id"], row["split"], *(row[name] for name in FILE_COLUMNS),
                              ", ".join(row["flags"]) + (f" ({row['error']})" if row["error"] else "")]
                             for row in shown])
    if len(rows) > len(shown):
        lines += ["", f"... and {len(rows) - len(shown)} more: see report.json and files.jsonl."]
    return section_text(lines)


def _snr_section(snr: dict[str, Any], config: Config) -> str:
    lines = ["## Evaluation SNR", "",
             f"{snr['utterances']} utterances in evaluate/metrics.json: mean SNR {snr['snr_db_mean']:.2f} dB, "
             f"{snr['negative']} below 0 dB; {snr['measured']} of them measured here.", ""]
    body = [[side, name, *snr["levels"][side][name].values()]
            for side in ("reference", "estimate") for name in ("rms_dbfs", "peak_dbfs")]
    lines += markdown_table(["side", "level", "min", "10%", "median", "90%", "max"], body)
    gap = snr["level_gap_db"]
    lines += ["", f"Mean output-minus-input RMS: {'n/a' if gap is None else f'{gap:+.2f} dB'} "
                  f"(a level mismatch is beyond ±{config.diagnose.data.level_gap_db:g} dB)."]
    if snr["is_negative"]:
        lines += ["", f"Explained by: {', '.join(snr['explained_by']) or 'neither level nor the data'}."]
    worst = sorted(snr["points"], key=lambda point: point["snr_db"])[:10]
    lines += ["", "Lowest SNR:", ""]
    lines += markdown_table(["utterance", "SNR dB", "input RMS dBFS", "output RMS dBFS", "flags"],
                            [[p["utterance"], p["snr_db"], p["reference_rms_dbfs"], p["estimate_rms_dbfs"],
                              ", ".join(p["flags"])] for p in worst])
    return section_text(lines)


def distributions_png(config: Config, tally: Tally, window: float) -> bytes | None:
    """Histograms of duration, RMS, silence and padding per split, with the thresholds drawn."""
    if not any(len(tally.figure(split, "duration")) for split in tally.splits):
        return None
    settings = config.diagnose.data
    lines = {"duration": [("min_seconds", settings.min_seconds), ("training window", window)],
             "rms_db": [("min_rms_db", settings.min_rms_db)],
             "silence_ratio": [("max_silence_ratio", settings.max_silence_ratio)],
             "padding_ratio": [("max_padding_ratio", settings.max_padding_ratio)]}
    figure = new_figure(len(HISTOGRAMS), 2)
    for index, (name, label) in enumerate(HISTOGRAMS, 1):
        axes = figure.add_subplot(2, 2, index)
        values = [tally.figure(split, name) for split in tally.splits]
        everything = np.concatenate(values)
        edges = np.histogram_bin_edges(everything, bins=min(30, max(5, len(everything))))
        for split, data in reversed(list(zip(tally.splits, values))):  # validation, the smaller, drawn on top
            axes.hist(data, bins=edges, alpha=0.6, label=f"{split} ({len(data)})")
        for (key, value), style in zip(lines[name], ("--", ":")):
            axes.axvline(value, color="crimson", linestyle=style, label=f"{key} {value:g}")
        axes.set_xlabel(label)
        axes.set_ylabel("files")
        axes.legend(fontsize="small")
    return png_bytes(figure)


def snr_png(snr: dict[str, Any], config: Config) -> bytes | None:
    """SNR against input RMS (flagged files marked), and output against input RMS around the identity."""
    points = [p for p in snr["points"] if p["reference_rms_dbfs"] is not None and p["estimate_rms_dbfs"] is not None]
    if not points:
        return None
    flagged = np.array([bool(p["flags"]) for p in points])
    reference = np.array([p["reference_rms_dbfs"] for p in points])
    estimate = np.array([p["estimate_rms_dbfs"] for p in points])
    values = np.array([p["snr_db"] for p in points])
    figure = new_figure(2, 2)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for mask, label, marker in ((~flagged, "not flagged", "o"), (flagged, "flagged file", "x")):
        left.scatter(reference[mask], values[mask], marker=marker, label=label)
        right.scatter(reference[mask], estimate[mask], marker=marker, label=label)
    left.axhline(0, color="grey", linewidth=0.8)
    left.axvline(config.diagnose.data.min_rms_db, color="crimson", linestyle="--",
                 label=f"min_rms_db {config.diagnose.data.min_rms_db:g}")
    left.set_xlabel("input (reference) RMS, dBFS")
    left.set_ylabel("SNR, dB")
    low, high = float(min(reference.min(), estimate.min())), float(max(reference.max(), estimate.max()))
    gap = config.diagnose.data.level_gap_db
    right.plot([low, high], [low, high], color="grey", linewidth=0.8, label="output = input")
    right.fill_between([low, high], [low - gap, high - gap], [low + gap, high + gap], color="grey", alpha=0.15,
                       label=f"±{gap:g} dB")
    right.set_xlabel("input (reference) RMS, dBFS")
    right.set_ylabel("output (estimate) RMS, dBFS")
    for axes in (left, right):
        axes.legend(fontsize="small")
    return png_bytes(figure)
