"""What `diagnose data` measures: which files it reads, each file's levels and flags, and their tally.

Files are read one at a time, so memory does not grow with their length; of each file only its
figures stay (8 bytes each, for quantiles and plots), its whole row goes to files.jsonl.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from unitvox import audio
from unitvox.config import Config
from unitvox.config.diagnose import DataDiagnosisConfig
from unitvox.filterlist import read_filter_list
from unitvox.layout import MANIFEST, SPLIT, UNITS
from unitvox.stages.prepare import list_sources, speaker_of
from unitvox.store import Store, StoreError
from unitvox.vocoder.build import window_frames
from unitvox.vocoder.dataset import Item, split_items

VALIDATION, TRAINING, RECORDINGS = "validation", "train", "recordings"
UNREADABLE = "unreadable"
# Each flag, the figure it judges and the threshold key of `diagnose.data` it is judged by.
FLAG_RULES = {
    "too_short": ("duration", "<", "min_seconds"),
    "too_quiet": ("rms_db", "<", "min_rms_db"),
    "mostly_silent": ("silence_ratio", ">", "max_silence_ratio"),
    "heavy_padding": ("padding_ratio", ">", "max_padding_ratio"),
    "clipped": ("clipped_ratio", ">", "max_clipped_ratio"),
}
FLAGS = tuple(FLAG_RULES)
# Heavy padding alone is fixed by a shorter training window, not by dropping the file.
FILTER_FLAGS = ("too_short", "too_quiet", "mostly_silent", "clipped", UNREADABLE)
FIGURES = ("duration", "peak_db", "rms_db", "silence_ratio", "padding_ratio", "clipped_ratio")
QUANTILES = {"min": 0.0, "p10": 0.1, "median": 0.5, "p90": 0.9, "max": 1.0}


@dataclass(frozen=True)
class Entry:
    """One file to read: its id, its split (`validation`, `train` or `recordings`) and where its audio is."""

    id: str
    split: str
    store: Store
    key: str
    speaker: str = ""


def window_seconds(config: Config) -> float:
    """The length of one training window: what a shorter file is padded up to."""
    return window_frames(config) * config.train.generator.hop_samples / config.prepare.sample_rate


def validation_ids(config: Config, store: Store) -> tuple[frozenset[str], str]:
    """The validation segment ids and where they come from: train's split, else the split train would make."""
    if store.exists(SPLIT):
        return frozenset(store.read_json(SPLIT)["validation"]), f"the split training used ({SPLIT})"
    settings = config.train
    excluded = read_filter_list(settings.exclude, "train.exclude")
    listing = UNITS if store.exists(UNITS) else MANIFEST
    # Ids only (no units), split as build_trainer splits them.
    items = [Item(row["id"], "", "", ()) for row in store.read_jsonl(listing) if row["id"] not in excluded]
    _, validation = split_items(items, settings.validation_fraction, settings.seed, settings.validation_items)
    ids = frozenset(item.segment_id for item in validation[: settings.validation_items])
    return ids, f"the split train would make from {listing} (train has not run)"


def prepared_entries(store: Store, validation: frozenset[str]) -> Iterator[Entry]:
    """The manifest's segments, validation ones first (two passes, so nothing is held)."""
    for wanted in (True, False):
        for row in store.read_jsonl(MANIFEST):
            if (row["id"] in validation) == wanted:
                yield Entry(row["id"], VALIDATION if wanted else TRAINING, store, row["audio"], row.get("speaker", ""))


def raw_entries(config: Config) -> Iterator[Entry]:
    """The recordings under `prepare.input`, each as a whole (before prepare would split it)."""
    for source in list_sources(config.prepare):
        yield Entry(source.relative, RECORDINGS, source.store, source.key,
                    speaker_of(source.relative, config.prepare.speaker_pattern))


def measure_entry(entry: Entry, config: Config, window: float) -> dict[str, Any]:
    """One file's row: its figures and flags, or `unreadable` with the reason."""
    row: dict[str, Any] = {"id": entry.id, "split": entry.split, "speaker": entry.speaker,
                           "audio": entry.store.url(entry.key)}
    rate = config.prepare.sample_rate
    try:
        with entry.store.local_copy(entry.key) as path:
            samples, source_rate, _ = audio.decode(path)
    except audio.AudioError as error:
        return {**row, **dict.fromkeys(FIGURES), "flags": [UNREADABLE], "error": f"{error.reason}: {error}"}
    except (FileNotFoundError, OSError, StoreError) as error:
        return {**row, **dict.fromkeys(FIGURES), "flags": [UNREADABLE], "error": f"missing: {error}"}
    mono = audio.to_mono(samples, source_rate, rate)
    del samples
    duration = len(mono) / rate
    levels = audio.measure(mono, rate, config.prepare.split, config.prepare.checks)
    row.update(duration=round(duration, 4), **levels.as_dict(),
               padding_ratio=round(max(0.0, 1.0 - duration / window), 4))
    row["flags"] = flags_of(row, config.diagnose.data)
    row["error"] = None
    return row


def flags_of(row: dict[str, Any], settings: DataDiagnosisConfig) -> list[str]:
    """The flags a measured row earns under the thresholds of `diagnose.data`."""
    found = []
    for flag, (figure, comparison, threshold_key) in FLAG_RULES.items():
        value, threshold = row[figure], getattr(settings, threshold_key)
        if (value < threshold) if comparison == "<" else (value > threshold):
            found.append(flag)
    return found


def filter_reasons(row: dict[str, Any]) -> list[str]:
    """The flags that put a file on the filter list (none: it stays)."""
    return [flag for flag in row["flags"] if flag in FILTER_FLAGS]


class Tally:
    """Counts and figures per split, and the durations of the files the filter list keeps."""

    def __init__(self) -> None:
        self.files: Counter = Counter()
        self.seconds: Counter = Counter()
        self.flagged: Counter = Counter()
        self.flags: dict[str, Counter] = {}
        self.values: dict[str, dict[str, array]] = {}
        self.kept_durations = array("d")
        self.kept_heavy_padding = 0

    def add(self, row: dict[str, Any]) -> None:
        split = row["split"]
        self.files[split] += 1
        self.flagged[split] += bool(row["flags"])
        self.flags.setdefault(split, Counter()).update(row["flags"])
        if row["error"] is not None:
            return
        self.seconds[split] += row["duration"]
        values = self.values.setdefault(split, {figure: array("d") for figure in FIGURES})
        for figure in FIGURES:
            values[figure].append(row[figure])
        if not filter_reasons(row):
            self.kept_durations.append(row["duration"])
            self.kept_heavy_padding += "heavy_padding" in row["flags"]

    @property
    def splits(self) -> list[str]:
        return [split for split in (VALIDATION, TRAINING, RECORDINGS) if self.files[split]]

    def figure(self, split: str, name: str) -> np.ndarray:
        return np.frombuffer(self.values.get(split, {}).get(name, array("d")), dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Per split: files, hours, flagged files, files per flag and quantiles of every figure."""
        return {split: {
            "files": self.files[split],
            "hours": round(self.seconds[split] / 3600, 4),
            "flagged": self.flagged[split],
            "flags": {flag: self.flags[split][flag] for flag in (*FLAGS, UNREADABLE)},
            "figures": {name: quantiles(self.figure(split, name)) for name in FIGURES},
        } for split in self.splits}


def quantiles(values: np.ndarray) -> dict[str, float | None]:
    """min, 10%, median, 90% and max of `values` (None each when there are none)."""
    if not len(values):
        return dict.fromkeys(QUANTILES)
    return {name: round(float(np.quantile(values, q)), 4) for name, q in QUANTILES.items()}


def recommended_segment_seconds(config: Config, tally: Tally) -> float | None:
    """A shorter `train.segment_seconds` when too many kept files are heavy padding, else None.

    It is the length `diagnose.data.segment_coverage` of the kept files reach, down to whole unit frames.
    """
    settings, kept = config.diagnose.data, len(tally.kept_durations)
    if not kept or tally.kept_heavy_padding / kept <= settings.max_padded_files_ratio:
        return None
    frame = config.train.generator.hop_samples / config.prepare.sample_rate
    reached = float(np.quantile(np.frombuffer(tally.kept_durations), 1.0 - settings.segment_coverage))
    frames = max(1, math.floor(round(reached / frame, 6)))
    seconds = round(frames * frame, 4)
    return seconds if seconds < config.train.segment_seconds else None
