"""What encode, vocode and resynthesize read: recordings (files, folders, list files, s3:// prefixes) and unit files.

Recordings go through prepare's listing and `unitvox.audio`'s decoding; anything that cannot be used
becomes a `Failure` naming the file (and line), and the rest goes on.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from unitvox import audio
from unitvox.config import ConfigError, PrepareConfig
from unitvox.stages.prepare import Source, printable, scan_sources
from unitvox.store import split_uri
from unitvox.units.bpe import text_to_units


@dataclass(frozen=True)
class Failure:
    """An input left out: where (file URI, with the line for unit files) and why."""

    where: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.where}{f':{self.line}' if self.line else ''}: {self.reason}"


def audio_sources(inputs: list[str], extensions: list[str] | None = None) -> tuple[list[Source], list[Failure]]:
    """Recordings named by `inputs` (audio files, folders, list files, s3:// prefixes), ids made unique."""
    extensions = extensions or PrepareConfig().extensions
    suffixes = tuple(f".{e.lower().lstrip('.')}" for e in extensions)
    found: list[Source] = []
    failures: list[Failure] = []
    for given in inputs:
        store, key = split_uri(given)
        if key.lower().endswith(suffixes):  # one recording: prepare's listing takes folders and list files
            found.append(Source(store, key, PurePosixPath(key).name, PurePosixPath(key).stem))
            continue
        try:
            sources, skipped = scan_sources(PrepareConfig(input=given, extensions=list(extensions)))
        except ConfigError as error:
            failures.append(Failure(given, str(error).removeprefix("prepare.input: ")))
            continue
        found += sources
        failures += [Failure(row["source"], f"{row['reason']}: {row['detail']}") for row in skipped]
    return _unique_ids(found), failures


def _unique_ids(sources: list[Source]) -> list[Source]:
    seen: Counter[str] = Counter()
    unique = []
    for source in sources:
        seen[source.source_id] += 1
        count = seen[source.source_id]
        unique.append(source if count == 1 else Source(source.store, source.key, source.relative,
                                                       f"{source.source_id}-{count}"))
    return unique


def read_recording(source: Source, rate: int) -> np.ndarray:
    """A recording as mono float32 at `rate`, decoded whole when small and in blocks when long.

    Raises:
        AudioError: empty, unreadable, undecodable, NaN or infinite samples (prepare's reasons).
        FileNotFoundError: the file is gone.
    """
    with source.store.local_copy(source.key) as path:
        info = audio.probe(path)
        if info.fits_in_memory:
            samples, found_rate, _ = audio.decode(path)
            return audio.to_mono(samples, found_rate, rate)
        return np.concatenate(list(audio.stream_mono(path, rate)))


def check_levels(samples: np.ndarray, rate: int, levels: dict[str, Any]) -> str | None:
    """Prepare's segment checks (too short, too quiet, mostly silent, clipped) with the run's settings, as a
    warning, or None when they pass; `levels` is a bundle's `{"checks": ..., "split": ...}`."""
    from unitvox.config import ChecksConfig, SplitConfig, from_dict

    checks = from_dict(ChecksConfig, levels.get("checks", {}), "levels.checks")
    split = from_dict(SplitConfig, levels.get("split", {}), "levels.split")
    failed = audio.check(audio.measure(samples, rate, split, checks), len(samples) / rate, checks)
    return None if failed is None else f"{failed[0]}: {failed[1]}"


# ---------------------------------------------------------------------------------------------
# Unit files


@dataclass
class UnitSequence:
    """One utterance read from a unit file: its name, line, units and (for run units) durations.

    `deduplicated` says whether the units are run units: True for a row with `durations` or
    `"deduplicated": true` (and BPE pieces of a deduplicated motif model), False for a JSON row of
    frames (the run's units.jsonl), None for text (the model's own form).
    """

    name: str
    line: int
    units: list[int]
    durations: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    deduplicated: bool | None = None


def read_unit_file(uri: str, k: int, pieces_deduplicated: bool | None = None) -> tuple[list[UnitSequence], list[Failure]]:
    """Utterances of a JSON-lines (the run's units.jsonl: `units`, optional `durations`, or BPE `pieces`) or
    text file (one utterance a line, whitespace-separated units); a bad line is a Failure, the others are read.

    `pieces_deduplicated`: whether the model's BPE motif model spells run units (a bundle's `bpe.deduplicated`).
    """
    store, key = split_uri(uri)
    where = unit_file_name(uri)
    try:
        text = store.read_text(key)
    except (FileNotFoundError, UnicodeDecodeError) as error:
        return [], [Failure(where, f"cannot read the file: {error}")]
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        return [], [Failure(where, "no units: the file is empty")]
    stem = PurePosixPath(key).stem
    is_json = lines[0][1].startswith("{")
    sequences, failures = [], []
    for number, line in lines:
        try:
            found = _json_line(line, k, pieces_deduplicated) if is_json else (_text_line(line, k), None, {}, None)
        except ValueError as error:
            failures.append(Failure(where, str(error), number))
            continue
        units, durations, extra, runs = found
        name = str(extra.get("id") or (stem if len(lines) == 1 else f"{stem}_{number:04d}"))
        sequences.append(UnitSequence(name, number, units, durations, extra, runs))
    return sequences, failures


def unit_file_name(uri: str) -> str:
    """How failures name a unit file."""
    store, key = split_uri(uri)
    return printable(store.url(key))


def _text_line(line: str, k: int) -> list[int]:
    units = []
    for position, token in enumerate(line.split()):
        try:
            units.append(int(token))
        except ValueError:
            raise ValueError(f"token {position} {token!r} is not an integer unit") from None
    return _in_range(units, k)


def _json_line(line: str, k: int, pieces_deduplicated: bool | None = None
               ) -> tuple[list[int], list[int] | None, dict[str, Any], bool | None]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object with `units` (or `pieces`)")
    if "pieces" in row and "units" not in row:
        if not isinstance(row["pieces"], list) or not all(isinstance(p, str) for p in row["pieces"]):
            raise ValueError("`pieces` must be a list of BPE piece strings")
        units = text_to_units("".join(row["pieces"]))
        runs = pieces_deduplicated
    elif isinstance(row.get("units"), list):
        units = row["units"]
        runs = False  # the run's units.jsonl format: frame units
    else:
        raise ValueError("no `units` list (nor BPE `pieces`) in this row")
    for position, unit in enumerate(units):
        if not isinstance(unit, int) or isinstance(unit, bool):
            raise ValueError(f"unit {position} {unit!r} is not an integer")
    flag = row.get("deduplicated")
    if flag is not None and not isinstance(flag, bool):
        raise ValueError(f"`deduplicated` must be true or false, got {flag!r}")
    durations = row.get("durations")
    if durations is not None:
        if flag is False:
            raise ValueError("`durations` are given but `deduplicated` is false: durations belong to run units")
        _check_durations(durations, len(units))
    runs = True if durations is not None else (flag if flag is not None else runs)
    extra = {name: row[name] for name in ("id", "speaker") if name in row}
    return _in_range(units, k), durations, extra, runs


def _check_durations(durations: Any, count: int) -> None:
    if not isinstance(durations, list):
        raise ValueError(f"`durations` must be a list of integers, one per unit, got {type(durations).__name__}")
    if len(durations) != count:
        raise ValueError(f"`durations` has {len(durations)} entries for {count} units: give one duration per unit")
    for position, duration in enumerate(durations):
        if not isinstance(duration, int) or isinstance(duration, bool):
            raise ValueError(f"duration {position} {duration!r} is not an integer number of frames")
        if duration < 1:
            raise ValueError(f"duration {duration} at position {position} is not a positive number of frames")


def _in_range(units: list[int], k: int) -> list[int]:
    if not units:
        raise ValueError("no units on this line")
    for position, unit in enumerate(units):
        if not 0 <= unit < k:
            raise ValueError(f"unit {unit} at position {position} is outside 0..{k - 1} (the model's k is {k})")
    return units
