"""prepare: raw recordings to checked 16 kHz mono segments, a manifest, rejections and a report.

Run: unitvox prepare --config jobs/base.yaml --run ./runs/exp1 --set prepare.input=/data/raw
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from unitvox import audio
from unitvox.config import Config, ConfigError, PrepareConfig
from unitvox.filterlist import filter_list_fingerprint, read_filter_list
from unitvox.stages import Context, IncompleteError, Phase
from unitvox.stages.record import write_success
from unitvox.store import Store, open_store, split_uri

PHASES = (Phase("segment", sharded=True), Phase("merge"))

MANIFEST = "prepare/manifest.jsonl"
REJECTED = "prepare/rejected.jsonl"
REPORT = "prepare/report.json"
EXCLUDED = "excluded"
AUDIO = "prepare/audio"
RECORDS = "prepare/records"
DURATION_BINS = [0, 1, 2, 3, 5, 8, 12, 16, 20, 30, 60]
LEVEL_BINS = [-120, -60, -50, -45, -40, -35, -30, -25, -20, -15, -10, -5, 0]


@dataclass(frozen=True)
class Source:
    """One input recording: where it is, the path the speaker pattern sees, and its segment id stem."""

    store: Store
    key: str
    relative: str
    source_id: str

    @property
    def uri(self) -> str:
        return self.store.url(self.key)


def list_sources(config: PrepareConfig) -> list[Source]:
    """Every input recording, sorted, from a folder, an s3:// prefix or a list file (one path per line)."""
    if not config.input:
        raise ConfigError("prepare.input: not set; pass --set prepare.input=/path/to/recordings")
    extensions = tuple(f".{e.lower().lstrip('.')}" for e in config.extensions)
    store, key = split_uri(config.input)
    is_list_file = not key.lower().endswith(extensions) and store.exists(key)
    if is_list_file:
        found = _from_list_file(store, key)
    else:
        root = open_store(config.input)
        if root.local_root is not None and not root.local_root.is_dir():
            raise ConfigError(f"prepare.input: {config.input} is neither a folder nor a list file")
        found = [(root, k, k) for k in root.list()]
    found = [item for item in found if item[2].lower().endswith(extensions)]
    if not found:
        raise ConfigError(f"prepare.input: no {'/'.join(config.extensions)} files under {config.input}")
    found.sort(key=lambda item: item[2])
    return [Source(s, k, rel, sid) for (s, k, rel), sid in zip(found, _source_ids([f[2] for f in found]))]


def _from_list_file(store: Store, key: str) -> list[tuple[Store, str, str]]:
    found = []
    for line in store.read_text(key).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        is_absolute = "://" in line or line.startswith("/")
        item_store, item_key = split_uri(line if is_absolute else store.url(line))
        found.append((item_store, item_key, line))
    return found


def _source_ids(relatives: list[str]) -> list[str]:
    """File stems as ids; stems that repeat in several folders get their folders prepended."""
    stems = [_clean(PurePosixPath(r).stem) for r in relatives]
    repeated = {stem for stem, n in Counter(stems).items() if n > 1}
    return [
        _clean(str(PurePosixPath(r).with_suffix("")).replace("/", "-")) if stem in repeated else stem
        for r, stem in zip(relatives, stems)
    ]


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "audio"


def speaker_of(relative: str, pattern: str) -> str:
    match = re.search(pattern, relative)
    return _clean(match.group("speaker")) if match and match.group("speaker") else "unknown"


def inputs(config: Config, store: Store) -> dict[str, Any]:
    sources = list_sources(config.prepare)
    listing = "\n".join(s.uri for s in sources).encode()
    return {"sources": {"input": config.prepare.input, "files": len(sources),
                        "sha256": hashlib.sha256(listing).hexdigest()},
            **filter_list_fingerprint(config.prepare.exclude, "prepare.exclude")}


def excluded_entries(config: PrepareConfig) -> frozenset[str]:
    """The entries of `prepare.exclude` (segment ids and recording paths), without `file://` prefixes."""
    return frozenset(entry.removeprefix("file://") for entry in read_filter_list(config.exclude, "prepare.exclude"))


def is_listed(source: Source, entries: frozenset[str]) -> bool:
    """Whether a filter list names this recording, by its path under `prepare.input` or its URI."""
    return bool(entries) and not entries.isdisjoint({source.relative, source.uri.removeprefix("file://")})


def records_hash(config: Config) -> str:
    """What a recording's record depends on: the prepare config less the filter list.

    Listed segments are dropped at merge and a listed recording's record says so itself, so an
    edited filter list decodes nothing again.
    """
    return dataclasses.replace(config, prepare=dataclasses.replace(config.prepare, exclude="")).stage_hash("prepare")


# ---------------------------------------------------------------------------------------------
# Phase: segment (sharded)


def segment(context: Context) -> dict[str, Any]:
    """Decode, split and check this shard's recordings; one record per recording makes reruns resume."""
    config, store = context.config, context.store
    config_hash, entries = records_hash(config), excluded_entries(config.prepare)
    mine = context.shard.take(list_sources(config.prepare))
    done = skipped = 0
    shard = str(context.shard.index)
    context.metrics.gauge("stage_items_planned", len(mine), stage="prepare", shard=shard)
    context.metrics.gauge("stage_items_done", 0, stage="prepare", shard=shard)
    progress = tqdm(mine, desc=f"prepare {context.shard.name}", unit="file", mininterval=2.0, disable=None)
    for source in progress:
        record_key, listed = f"{RECORDS}/{source.source_id}.json", is_listed(source, entries)
        if not context.force and _record_is_current(store, record_key, config_hash, listed):
            skipped += 1
        else:
            found = _listed_source(source) if listed else process_source(source, config.prepare, store)
            store.write_json(record_key, {"config_hash": config_hash, EXCLUDED: listed, **found})
            done += 1
        context.metrics.gauge("stage_items_done", done + skipped, stage="prepare", shard=shard)
    return {"processed": done, "resumed": skipped}


def _record_is_current(store: Store, key: str, config_hash: str, listed: bool) -> bool:
    if not store.exists(key):
        return False
    saved = store.read_json(key)
    return (saved.get("config_hash") == config_hash and saved.get(EXCLUDED, False) == listed
            and all(store.exists(row["audio"]) for row in saved["kept"]))


def _listed_source(source: Source) -> dict[str, list[dict]]:
    """A recording the filter list names: skipped undecoded, and reported."""
    return {"kept": [], "rejected": [_rejection(source, None, EXCLUDED, "the recording is listed in prepare.exclude")]}


def process_source(source: Source, config: PrepareConfig, store: Store) -> dict[str, list[dict]]:
    """Segments of one recording: kept rows (their audio written to the store) and rejected rows."""
    try:
        with source.store.local_copy(source.key) as path:
            samples, rate, channels = audio.decode(path)
    except (audio.AudioError, FileNotFoundError) as error:
        reason = error.reason if isinstance(error, audio.AudioError) else "missing"
        return {"kept": [], "rejected": [_rejection(source, None, reason, str(error))]}
    mono = audio.to_mono(samples, rate, config.sample_rate)
    del samples
    try:
        ranges = audio.split(mono, config.sample_rate, config.split)
    except audio.AudioError as error:
        return {"kept": [], "rejected": [_rejection(source, None, error.reason, str(error))]}
    speaker = speaker_of(source.relative, config.speaker_pattern)
    kept, rejected = [], []
    for number, (start, end) in enumerate(ranges):
        segment_id = f"{source.source_id}_{number:03d}"
        piece = mono[start:end]
        duration = len(piece) / config.sample_rate
        levels = audio.measure(piece, config.sample_rate, config.split, config.checks)
        failed = audio.check(levels, duration, config.checks)
        if failed:
            rejected.append(_rejection(source, segment_id, *failed, start / config.sample_rate, duration, levels))
            continue
        key = f"{AUDIO}/{speaker}/{segment_id}.flac"
        store.write_bytes(key, audio.encode_flac(piece, config.sample_rate))
        kept.append({
            "id": segment_id, "audio": key, "source": source.uri, "speaker": speaker,
            "start": round(start / config.sample_rate, 4), "duration": round(duration, 4),
            "sample_rate": config.sample_rate, "source_rate": rate, "source_channels": channels,
            **levels.as_dict(),
        })
    return {"kept": kept, "rejected": rejected}


def _rejection(source: Source, segment_id: str | None, reason: str, detail: str, start: float | None = None,
               duration: float | None = None, levels: audio.Levels | None = None) -> dict[str, Any]:
    row = {"source": source.uri, "segment": segment_id, "reason": reason, "detail": detail}
    if start is not None:
        row.update(start=round(start, 4), duration=round(duration, 4), **levels.as_dict())
    return row


def _listed_segment(row: dict[str, Any]) -> dict[str, Any]:
    """A kept segment's rejection row when the filter list names it."""
    levels = {field.name: row[field.name] for field in dataclasses.fields(audio.Levels)}
    return {"source": row["source"], "segment": row["id"], "reason": EXCLUDED,
            "detail": "the segment is listed in prepare.exclude", "start": row["start"], "duration": row["duration"],
            **levels}


# ---------------------------------------------------------------------------------------------
# Phase: merge


def merge(context: Context) -> dict[str, Any]:
    """Join every recording's record into the manifest, the rejections and the report."""
    config, store = context.config, context.store
    config_hash, entries = records_hash(config), excluded_entries(config.prepare)
    sources = list_sources(config.prepare)
    missing = [s.relative for s in sources
               if not _record_is_current(store, f"{RECORDS}/{s.source_id}.json", config_hash, is_listed(s, entries))]
    if missing:
        raise IncompleteError(
            f"prepare: {len(missing)} of {len(sources)} recordings have not been segmented yet "
            f"(first: {missing[0]}); run the remaining shards of phase segment"
        )
    report = _Report(entries)
    store.write_jsonl(MANIFEST, report.kept(store, sources))
    store.write_jsonl(REJECTED, report.rejected(store, sources))
    summary = report.summary()
    store.write_json(REPORT, summary)
    for outcome in ("kept", "rejected"):
        context.metrics.gauge("prepare_segments", summary[f"segments_{outcome}"], outcome=outcome)
    context.metrics.gauge("prepare_kept_audio_seconds", report.seconds)
    write_success(
        store, "prepare", config_hash=config.stage_hash("prepare"), inputs=inputs(config, store),
        outputs=[MANIFEST, REJECTED, REPORT], output_sets={f"{AUDIO}/": summary["segments_kept"]},
        started=context.started, extra={"stage": "prepare", "config": config.to_dict()["prepare"]},
    )
    return summary


class _Report:
    """Streams records twice (kept, then rejected) while counting, so memory stays flat.

    Segments named in the filter list `excluded` move from kept to rejected (reason `excluded`).
    """

    def __init__(self, excluded: frozenset[str] = frozenset()) -> None:
        self.excluded = excluded
        self.durations = np.zeros(len(DURATION_BINS) - 1, dtype=int)
        self.levels = np.zeros(len(LEVEL_BINS) - 1, dtype=int)
        self.reasons: Counter = Counter()
        self.speakers: Counter = Counter()
        self.files = self.files_rejected = self.kept_count = 0
        self.seconds = 0.0

    def kept(self, store: Store, sources: list[Source]):
        for source in sources:
            saved = store.read_json(f"{RECORDS}/{source.source_id}.json")
            self.files += 1
            kept = [row for row in saved["kept"] if row["id"] not in self.excluded]
            self.files_rejected += not kept
            for row in kept:
                self.kept_count += 1
                self.seconds += row["duration"]
                self.speakers[row["speaker"]] += row["duration"]
                self.durations += np.histogram([row["duration"]], DURATION_BINS)[0]
                self.levels += np.histogram([np.clip(row["rms_db"], -120, 0)], LEVEL_BINS)[0]
                yield row

    def rejected(self, store: Store, sources: list[Source]):
        for source in sources:
            saved = store.read_json(f"{RECORDS}/{source.source_id}.json")
            listed = [_listed_segment(row) for row in saved["kept"] if row["id"] in self.excluded]
            for row in listed + saved["rejected"]:
                self.reasons[row["reason"]] += 1
                yield row

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "files_without_segments": self.files_rejected,
            "segments_kept": self.kept_count,
            "segments_rejected": sum(v for k, v in self.reasons.items()),
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "hours_kept": round(self.seconds / 3600, 4),
            "speakers": {name: round(seconds / 3600, 4) for name, seconds in sorted(self.speakers.items())},
            "duration_histogram": {"bins_seconds": DURATION_BINS, "counts": self.durations.tolist()},
            "rms_histogram": {"bins_db": LEVEL_BINS, "counts": self.levels.tolist()},
        }
