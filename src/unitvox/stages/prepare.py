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
from unitvox.evaluation.transcripts import transcript_beside
from unitvox.filterlist import filter_list_fingerprint, read_filter_list
from unitvox.stages import Context, IncompleteError, Phase
from unitvox.stages.record import write_success
from unitvox.layout import MANIFEST, PREPARE_AUDIO as AUDIO, PREPARE_RECORDS as RECORDS, PREPARE_REPORT as REPORT, REJECTED
from unitvox.store import Store, open_store, split_uri

PHASES = (Phase("segment", sharded=True), Phase("merge"))

EXCLUDED = "excluded"
ESCAPED_EXAMPLES = 100  # file names the report shows of those that are not valid UTF-8
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
        """The recording's URI as reports show it (a name that is not valid UTF-8 escaped)."""
        return printable(self.store.url(self.key))

    @property
    def name_is_utf8(self) -> bool:
        return printable(self.key) == self.key


def printable(text: str) -> str:
    """`text` with the bytes of a file name that are not valid UTF-8 escaped (`caf\\xe9.wav`).

    Python keeps such bytes as surrogate escapes, which open the file but cannot be written as UTF-8.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def list_sources(config: PrepareConfig) -> list[Source]:
    """Every input recording, sorted, from a folder, an s3:// prefix or a list file (one path per line)."""
    return scan_sources(config)[0]


def scan_sources(config: PrepareConfig) -> tuple[list[Source], list[dict[str, Any]]]:
    """The input recordings, sorted, and a rejection row for every other file found under the input.

    Files left out are those of an extension not in `prepare.extensions`, and what the store's
    listing itself left out (dangling or looping symbolic links, pipes, unreadable folders).
    """
    if not config.input:
        raise ConfigError("prepare.input: not set; pass --set prepare.input=/path/to/recordings")
    extensions = tuple(f".{e.lower().lstrip('.')}" for e in config.extensions)
    _check_extensions(config.extensions)
    store, key = split_uri(config.input)
    is_list_file = not key.lower().endswith(extensions) and store.exists(key)
    skipped: list[dict[str, Any]] = []
    if is_list_file:
        found = _from_list_file(store, key)
    else:
        root = open_store(config.input)
        if root.local_root is not None and not root.local_root.is_dir():
            raise ConfigError(f"prepare.input: {config.input} is neither a folder nor a list file")
        keys, unlisted = root.scan()
        found = [(root, k, k) for k in keys]
        skipped = [_skipped(root.url(item.key), item.reason, item.detail) for item in unlisted]
    others = sorted(printable(s.url(k)) for s, k, rel in found if not rel.lower().endswith(extensions))
    skipped += [_skipped(uri, "unsupported_format", _unsupported(uri, config.extensions)) for uri in others]
    found = [item for item in found if item[2].lower().endswith(extensions)]
    if not found:
        raise ConfigError(f"prepare.input: no {'/'.join(config.extensions)} files under {config.input}"
                          + (f" ({len(skipped)} other files, e.g. {skipped[0]['source']})" if skipped else ""))
    found.sort(key=lambda item: item[2])
    sources = [Source(s, k, rel, sid) for (s, k, rel), sid in zip(found, _source_ids([f[2] for f in found]))]
    return sources, sorted(skipped, key=lambda row: row["source"])


def _check_extensions(extensions: list[str]) -> None:
    unknown = [e for e in extensions if e.lower().lstrip(".") not in audio.DECODABLE_EXTENSIONS]
    if unknown:
        raise ConfigError(f"prepare.extensions: {unknown} cannot be decoded here; supported: "
                          f"{list(audio.DECODABLE_EXTENSIONS)} (convert others first, e.g. ffmpeg -i in.m4a out.flac)")


def _unsupported(uri: str, extensions: list[str]) -> str:
    extension = PurePosixPath(uri).suffix.lower().lstrip(".")
    if not extension:
        return f"no file extension; prepare reads only {', '.join(extensions)} files (prepare.extensions)"
    decodable = "" if extension in audio.DECODABLE_EXTENSIONS else "; libsndfile cannot decode it either"
    return f".{extension} is not in prepare.extensions ({', '.join(extensions)}){decodable}"


def _skipped(uri: str, reason: str, detail: str) -> dict[str, Any]:
    return {"source": printable(uri), "segment": None, "reason": reason, "detail": detail}


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
    sources, skipped = scan_sources(config.prepare)
    listing = "\n".join([*(s.uri for s in sources), *(f"{r['source']} {r['reason']}" for r in skipped)]).encode()
    return {"sources": {"input": config.prepare.input, "files": len(sources), "not_prepared": len(skipped),
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
    """Segments of one recording: kept rows (their audio written to the store) and rejected rows.

    A recording that cannot be read, decoded or split is one rejected row with the reason.
    """
    try:
        with source.store.local_copy(source.key) as path:
            return _segment_recording(source, path, config, store)
    except (audio.AudioError, FileNotFoundError) as error:
        reason = error.reason if isinstance(error, audio.AudioError) else "missing"
        return {"kept": [], "rejected": [_rejection(source, None, reason, str(error))]}


def _pieces(path, info: audio.AudioInfo, config: PrepareConfig):
    """The (start, end, samples) of each stretch a recording is cut into.

    A short recording is decoded whole; a long one is read twice in blocks (once for its levels,
    once for its pieces), so memory stays flat however long it is. Both cut at the same places.
    """
    rate = config.sample_rate
    if info.fits_in_memory:
        samples, _, _ = audio.decode(path)
        mono = audio.to_mono(samples, info.rate, rate)
        del samples
        return ((start, end, mono[start:end]) for start, end in audio.split(mono, rate, config.split))
    levels = audio.FrameLevels(rate, config.split.frame_seconds)
    for block in audio.stream_mono(path, rate):
        levels.add(block)
    ranges = audio.split_levels(levels.levels(), levels.samples, rate, config.split)
    return audio.cut(audio.stream_mono(path, rate), ranges)


def _segment_recording(source: Source, path, config: PrepareConfig, store: Store) -> dict[str, list[dict]]:
    info = audio.probe(path)
    rate, channels = info.rate, info.channels
    pieces = _pieces(path, info, config)
    speaker = speaker_of(source.relative, config.speaker_pattern)
    kept, rejected = [], []
    for number, (start, end, piece) in enumerate(pieces):
        segment_id = f"{source.source_id}_{number:03d}"
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
    if len(kept) == 1 and not rejected:  # a whole-file segment: the corpus's transcript is its text
        text = transcript_beside(source.store, source.key)
        if text:
            kept[0]["text"] = text
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
    sources, skipped = scan_sources(config.prepare)
    missing = [s.relative for s in sources
               if not _record_is_current(store, f"{RECORDS}/{s.source_id}.json", config_hash, is_listed(s, entries))]
    if missing:
        raise IncompleteError(
            f"prepare: {len(missing)} of {len(sources)} recordings have not been segmented yet "
            f"(first: {missing[0]}); run the remaining shards of phase segment"
        )
    report = _Report(entries, skipped)
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

    Segments named in the filter list `excluded` move from kept to rejected (reason `excluded`);
    the files found under the input but not prepared (`skipped`) are rejected rows of their own.
    """

    def __init__(self, excluded: frozenset[str] = frozenset(), skipped: list[dict[str, Any]] = ()) -> None:
        self.excluded = excluded
        self.skipped = list(skipped)
        self.escaped_names: list[str] = []  # the first ESCAPED_EXAMPLES of them
        self.escaped_count = 0
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
            if not source.name_is_utf8:
                self.escaped_count += 1
                if len(self.escaped_names) < ESCAPED_EXAMPLES:
                    self.escaped_names.append(source.uri)
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
        for row in self.skipped:
            self.reasons[row["reason"]] += 1
            yield row

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "files_without_segments": self.files_rejected,
            # Found under prepare.input but not read (another extension, a dangling link ...); see rejected.jsonl.
            "files_not_prepared": len(self.skipped),
            # Names that are not valid UTF-8, prepared under an escaped name (`\\xe9` for byte 0xe9).
            "names_escaped": self.escaped_count,
            "names_escaped_examples": self.escaped_names,
            "segments_kept": self.kept_count,
            "segments_rejected": sum(self.reasons.values()) - len(self.skipped),
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "hours_kept": round(self.seconds / 3600, 4),
            "speakers": {name: round(seconds / 3600, 4) for name, seconds in sorted(self.speakers.items())},
            "duration_histogram": {"bins_seconds": DURATION_BINS, "counts": self.durations.tolist()},
            "rms_histogram": {"bins_db": LEVEL_BINS, "counts": self.levels.tolist()},
        }
