"""`unitvox diagnose data`: duration, level, silence, padding and clipping of every file, and why SNR is negative.

Run: unitvox diagnose data --config jobs/base.yaml --run RUN

Reads the prepared segments (prepare/manifest.jsonl), validation ones first, or, before prepare has
run, the recordings under `prepare.input`; flags files by the thresholds of `diagnose.data`;
recommends a shorter `train.segment_seconds` when padding is heavy; writes a filter list that
`prepare.exclude` and `train.exclude` accept; and, when evaluate/metrics.json holds a negative SNR,
says whether the output level or the data explains it. Writes RUN/diagnose/data/files.jsonl (a row
per file) and filter.txt as it goes; `write_diagnosis` adds report.json, report.md and the plots.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from unitvox.config import Config
from unitvox.diagnostics.data import data_report
from unitvox.diagnostics.data.levels import (
    FLAG_RULES, FLAGS, RECORDINGS, TRAINING, UNREADABLE, VALIDATION, Entry, Tally, filter_reasons, measure_entry,
    prepared_entries, raw_entries, recommended_segment_seconds, validation_ids, window_seconds,
)
from unitvox.diagnostics.diagnosis import OK, PROBLEM, WARNING, Diagnosis
from unitvox.diagnostics.data.snr import FLAGGED_FILES, OUTPUT_LEVEL, snr_check
from unitvox.filterlist import render_filter_list
from unitvox.errors import IncompleteError
from unitvox.layout import DIAGNOSE_DATA_FILES as FILES, DIAGNOSE_DATA_FILTER as FILTER, EVALUATE_METRICS as METRICS, MANIFEST
from unitvox.store import Store, StoreError

HELP = "duration, level, silence, padding and clipping of every file; a filter list; why validation SNR is negative"
EXAMPLES = """examples:
  unitvox diagnose data --config jobs/base.yaml --run RUN                 # why is validation SNR negative?
  unitvox diagnose data --config jobs/base.yaml --run RUN --source raw    # the recordings, before prepare
  unitvox diagnose data --config jobs/base.yaml --run RUN --set diagnose.data.min_rms_db=-35   # a stricter threshold

Then leave the flagged files out (the report prints the exact flags):
  unitvox pipeline --config jobs/base.yaml --run RUN \\
      --set prepare.exclude=RUN/diagnose/data/filter.txt --set train.exclude=RUN/diagnose/data/filter.txt"""

SOURCES = ("auto", "prepared", "raw")
# How the report names one and several files of each split.
NOUNS = {VALIDATION: ("validation file", "validation files"), TRAINING: ("training file", "training files"),
         RECORDINGS: ("recording", "recordings")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="prepared: the segments in prepare/manifest.jsonl; raw: the recordings under "
                             "prepare.input; auto (default): prepared once prepare has run, else raw")


def from_arguments(config: Config, store: Store, args: argparse.Namespace) -> Diagnosis:
    return diagnose_data(config, store, source=args.source)


def diagnose_data(config: Config, store: Store, *, source: str = "auto") -> Diagnosis:
    """Measure and flag every file (up to `diagnose.data.max_items`), write the rows and the filter list.

    Args:
        config: the run's config: thresholds from `diagnose.data`, silence from `prepare.split`, the
            training window from `train.segment_seconds`.
        store: the run's root.
        source: `prepared`, `raw` or `auto` (prepared once prepare has run).

    Returns:
        The diagnosis (kind `data`): per-split summary, flagged and validation files, the filter list,
        the recommendation and, when evaluation has run, the SNR check.

    Raises:
        IncompleteError: `source` is `prepared` but prepare has not run.
        ConfigError: `source` is raw and `prepare.input` is unset or empty, or `train.exclude` is unreadable.
    """
    prepared = _reads_prepared(store, source)
    window = window_seconds(config)
    metrics = _evaluation(store)
    entries, what, validation_source = _entries(config, store, prepared)
    reading = _Reading(config, window, {row.get("utterance") for row in (metrics or {}).get("utterances", [])})
    store.write_jsonl(FILES, reading.measure(iter(entries)))
    snr = snr_check(metrics, reading.evaluated_flags, config.diagnose.data) if metrics else None
    listed = _write_filter_list(store, reading.flagged, what, prepared)
    segment = recommended_segment_seconds(config, reading.tally)
    advice, notes = _recommendation(config, store, reading.tally, segment, len(listed), prepared, window)
    recommendation = [*(f"- {line}" for line in advice), *(f"- {line}" for line in notes)]
    findings = _findings(reading, snr, prepared) + advice
    figures = {name: png for name, png in (
        (data_report.DISTRIBUTIONS_PNG, data_report.distributions_png(config, reading.tally, window)),
        (data_report.SNR_PNG, data_report.snr_png(snr, config) if snr else None)) if png}
    context = {"what": what, "validation_source": validation_source, "read": reading.read, "stopped": reading.stopped,
               "max_items": config.diagnose.data.max_items, "window": window}
    details = {
        "source": "prepared" if prepared else "raw", "read": context, "files_jsonl": FILES, "filter_list": FILTER,
        "thresholds": {key: getattr(config.diagnose.data, key) for _, _, key in FLAG_RULES.values()},
        "window_seconds": window, "summary": reading.tally.summary(), "flagged_files": reading.flagged,
        "validation_files": reading.validation, "filtered": [entry for entry, _ in listed],
        "recommended_segment_seconds": segment, "recommendation": recommendation, "snr": snr,
    }
    return Diagnosis("data", _status(reading, snr, segment), _verdict(reading.tally, snr), findings, details,
                     data_report.sections(config, reading.tally, context, reading.flagged, reading.validation,
                                          recommendation, snr, figures), figures)


def _reads_prepared(store: Store, source: str) -> bool:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "prepared" and not store.exists(MANIFEST):
        raise IncompleteError(f"{store.url(MANIFEST)} does not exist: run prepare first, or diagnose the "
                              "recordings with --source raw")
    return source == "prepared" or (source == "auto" and store.exists(MANIFEST))


def _entries(config: Config, store: Store, prepared: bool) -> tuple[Iterable[Entry], str, str]:
    """(the files to read, what they are, where the validation split comes from)."""
    if not prepared:
        return raw_entries(config), (f"the recordings under prepare.input {config.prepare.input}, each whole "
                                     "(prepare has not run, so nothing is split yet)"), ""
    validation, validation_source = validation_ids(config, store)
    return prepared_entries(store, validation), f"the prepared segments in {store.url(MANIFEST)}", validation_source


def _write_filter_list(store: Store, flagged: list[dict[str, Any]], what: str, prepared: bool) -> list[tuple[str, str]]:
    """Write filter.txt (even empty, so an old list does not linger); returns its (id, reasons) entries."""
    listed = [(row["id"], ", ".join(filter_reasons(row))) for row in flagged if filter_reasons(row)]
    store.write_text(FILTER, render_filter_list(listed, [
        f"Files `unitvox diagnose data` flagged in {store.uri} ({what}).",
        "Leave them out with --set prepare.exclude=THIS_FILE" + (" --set train.exclude=THIS_FILE" if prepared else ""),
        "One id per line; the comment after each says why.",
    ]))
    return listed


def _evaluation(store: Store) -> dict[str, Any] | None:
    """evaluate/metrics.json when evaluation has run (a broken one is left out, not fatal)."""
    if not store.exists(METRICS):
        return None
    try:
        return store.read_json(METRICS)
    except StoreError:
        return None


class _Reading:
    """Measures entries one by one, tallying them and keeping only the rows the report needs."""

    def __init__(self, config: Config, window: float, evaluated: set[str]):
        self.config, self.window, self.evaluated = config, window, evaluated
        self.tally = Tally()
        self.flagged: list[dict[str, Any]] = []
        self.validation: list[dict[str, Any]] = []
        self.evaluated_flags: dict[str, list[str]] = {}
        self.read, self.stopped = 0, False

    def measure(self, entries: Iterator[Entry]) -> Iterator[dict[str, Any]]:
        limit = self.config.diagnose.data.max_items
        for entry in entries:
            if limit and self.read >= limit:
                self.stopped = True
                return
            row = measure_entry(entry, self.config, self.window)
            self.read += 1
            self.tally.add(row)
            if row["flags"]:
                self.flagged.append(row)
            if row["split"] == VALIDATION:
                self.validation.append(row)
            if row["id"] in self.evaluated:
                self.evaluated_flags[row["id"]] = row["flags"]
            yield row


def _findings(reading: _Reading, snr: dict[str, Any] | None, prepared: bool) -> list[str]:
    """What the command prints before the advice: the SNR explanation, then each flag with its threshold."""
    findings = list(snr["findings"]) if snr and snr["is_negative"] else []
    if not prepared:
        findings.append("prepare has not run: these are the raw recordings, each measured whole.")
    settings = reading.config.diagnose.data
    for flag, (figure, comparison, key) in FLAG_RULES.items():
        rows = [row for row in reading.flagged if flag in row["flags"]]
        if rows:
            findings.append(f"{_count_by_split(rows)} {'is' if len(rows) == 1 else 'are'} {flag} ({figure} "
                            f"{comparison} {getattr(settings, key):g}, diagnose.data.{key}): {_examples(rows)}.")
    unreadable = [row for row in reading.flagged if UNREADABLE in row["flags"]]
    if unreadable:
        findings.append(f"{_count_by_split(unreadable)} cannot be read: "
                        + "; ".join(f"{row['id']} ({row['error']})" for row in unreadable[:3]) + ".")
    if not reading.flagged:
        findings.append(f"No file of the {reading.read} read is flagged.")
    return findings


def _recommendation(config: Config, store: Store, tally: Tally, segment: float | None, listed: int, prepared: bool,
                    window: float) -> tuple[list[str], list[str]]:
    """(advice, notes): what to change, printed as findings too, and what the report adds to it."""
    advice, notes = [], []
    kept, heavy = len(tally.kept_durations), tally.kept_heavy_padding
    settings = config.diagnose.data
    if segment is not None:
        advice.append(f"Padding: {heavy} of {kept} files left after the filter list are more than "
                      f"{settings.max_padding_ratio:.0%} padding in a {window:g} s training window: use "
                      f"`--set train.segment_seconds={segment:g}` ({settings.segment_coverage:.0%} of them are at "
                      "least that long).")
    elif heavy:
        notes.append(f"{heavy} of {kept} files left after the filter list are heavy padding, no more than "
                     f"diagnose.data.max_padded_files_ratio {settings.max_padded_files_ratio:g}: "
                     f"train.segment_seconds {config.train.segment_seconds:g} can stay.")
    url = store.url(FILTER)
    if listed and prepared:
        advice.append(f"Filter list: {url} names {listed} files; leave them out with "
                      f"`--set prepare.exclude={url} --set train.exclude={url}`.")
        notes.append(f"To leave them out of training only (prepare and tokenize stay as they are): "
                     f"`--set train.exclude={url}`.")
    elif listed:
        advice.append(f"Filter list: {url} names {listed} recordings; leave them out with "
                      f"`--set prepare.exclude={url}`.")
    else:
        notes.append(f"The filter list {url} is empty: no file needs leaving out.")
    return advice, notes


def _verdict(tally: Tally, snr: dict[str, Any] | None) -> str:
    parts = []
    for split in tally.splits:
        flagged, files = tally.flagged[split], tally.files[split]
        counts = ", ".join(f"{flag.replace('_', ' ')} {tally.flags[split][flag]}"
                           for flag in (*FLAGS, UNREADABLE) if tally.flags[split][flag])
        parts.append(f"{flagged} of {_noun(split, files)} {'is' if flagged == 1 else 'are'} flagged"
                     + (f": {counts}" if counts else ""))
    verdict = "; ".join(parts) or "no file to read"
    if snr and snr["is_negative"]:
        words = {FLAGGED_FILES: "the flagged files", OUTPUT_LEVEL: "the output level"}
        causes = " and ".join(words[cause] for cause in snr["explained_by"])
        verdict += (f"; negative SNR ({snr['snr_db_mean']:.1f} dB) "
                    + (f"is explained by {causes}" if causes else "is explained by neither level nor the data"))
    return verdict


def _status(reading: _Reading, snr: dict[str, Any] | None, segment: float | None) -> str:
    if any(UNREADABLE in row["flags"] for row in reading.flagged) or (snr and snr["explained_by"]) or any(
            filter_reasons(row) for row in reading.validation):
        return PROBLEM
    if reading.flagged or segment is not None or (snr and snr["is_negative"]):
        return WARNING
    return OK


def _noun(split: str, count: int) -> str:
    return f"{count} {NOUNS[split][count != 1]}"


def _count_by_split(rows: list[dict[str, Any]]) -> str:
    return ", ".join(_noun(split, count) for split, count in Counter(row["split"] for row in rows).items())


def _examples(rows: list[dict[str, Any]], shown: int = 3) -> str:
    names = ", ".join(row["id"] for row in rows[:shown])
    return names + (f" and {len(rows) - shown} more" if len(rows) > shown else "")
