"""tokenize: frame features, a K-Means codebook fitted on a bounded sample, and units for every segment.

Run: unitvox tokenize --config jobs/base.yaml --run ./runs/exp1
Phases (what the pipeline and Kubernetes run one by one):
    sample (sharded)  features of a bounded, reproducible set of segments; a few frames each
    fit               MiniBatchKMeans on the pooled sample -> tokenize/codebook/
    assign (sharded)  units per segment -> tokenize/parts/<segment>.json, resumable segment by segment
    merge             tokenize/units.jsonl and tokenize/report.json

Every output is a function of the manifest and the config alone: the sample is pooled in manifest
order and fingerprinted by its content, so the shard count, the order shards finish in and the runner
(direct, `pipeline`, Kubernetes) change nothing. With a costly extractor (ssl) the sample phase keeps
each sampled segment's features, so assign reads them instead of running the encoder a second time;
that cache is bounded by `kmeans.sample_max_seconds`, not by the corpus, and merge deletes it.
Segments of similar length share encoder forwards (`features.batch_seconds`), and the extractor is
built once per process: `unitvox tokenize` running every shard and phase itself loads the model once.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm import tqdm

from unitvox import audio
from unitvox.config import Config
from unitvox.errors import IncompleteError
from unitvox.layout import (
    CODEBOOK, CODEBOOK_CENTROIDS, CODEBOOK_FINGERPRINT, MANIFEST, SAMPLE_CACHE_DIR as FEATURE_CACHE,
    SAMPLE_FEATURES_FILE as SAMPLE_FEATURES, TOKENIZE, TOKENIZE_PARTS as PARTS, TOKENIZE_REPORT as REPORT,
    TOKENIZE_SAMPLE as SAMPLE, UNITS,
)
from unitvox.stages import Context, Phase
from unitvox.stages.record import upstream, write_success
from unitvox.store import Store
from unitvox.units import features as feats
from unitvox.units.kmeans import Codebook, check_compatible, fit as fit_codebook, read_fingerprint

PHASES = (Phase("sample", sharded=True), Phase("fit"), Phase("assign", sharded=True), Phase("merge"))


def inputs(config: Config, store: Store) -> dict[str, Any]:
    return upstream(store, "prepare", MANIFEST, "tokenize")


def _segments(store: Store) -> list[dict[str, Any]]:
    """The manifest's rows, trimmed to what tokenize needs."""
    keep = ("id", "audio", "speaker", "duration")
    return [{name: row[name] for name in keep} for row in store.read_jsonl(MANIFEST)]


def _load_audio(store: Store, key: str) -> np.ndarray:
    with store.local_copy(key) as path:
        return audio.read_mono(path)[0]


def _extractor(context: Context) -> feats.FeatureExtractor:
    """The feature extractor, built once per `run_stage` call: its shards and phases share it."""
    config = context.config
    features, rate = config.tokenize.features, config.prepare.sample_rate
    return context.reused(("tokenize.features", repr(features), rate), lambda: feats.build_extractor(features, rate))


def _groups(rows: list[dict[str, Any]], config: Config) -> list[list[dict[str, Any]]]:
    """Rows in the groups that share encoder forwards: shortest first, up to `batch_seconds` of audio each.

    Shards take whole groups, and the groups depend on the rows and the config alone, so every
    segment meets the same batch neighbours, and gets the same features, whatever the shard count.
    """
    budget = config.tokenize.features.batch_seconds
    groups: list[list[dict[str, Any]]] = []
    seconds = 0.0
    for row in sorted(rows, key=lambda row: (row["duration"], row["id"])):
        if groups and seconds + row["duration"] <= budget:
            groups[-1].append(row)
            seconds += row["duration"]
        else:
            groups.append([row])
            seconds = row["duration"]
    return groups


def _extracted(store: Store, extractor: feats.FeatureExtractor, groups: list[list[dict[str, Any]]],
               config: Config) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """(row, features) for every row of `groups`, a group at a time: memory holds one group's audio and features."""
    for group in groups:
        audio_of_group = [_load_audio(store, row["audio"]) for row in group]
        yield from zip(group, feats.extract_many(extractor, audio_of_group, config.tokenize.features))


def _stable_number(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


# ---------------------------------------------------------------------------------------------
# Phase: sample (sharded)


def sample_plan(segments: list[dict[str, Any]], config: Config) -> list[tuple[int, int]]:
    """(manifest position, frame quota) of the segments that feed the K-Means sample.

    Segments are drawn in a seeded hash order, which spreads them across speakers and folders, until
    `sample_max_seconds` of audio; each then gives frames in proportion to its duration.
    """
    kmeans = config.tokenize.kmeans
    order = sorted(range(len(segments)), key=lambda i: _stable_number(kmeans.seed, segments[i]["id"]))
    chosen, seconds = [], 0.0
    for position in order:
        if seconds >= kmeans.sample_max_seconds:
            break
        chosen.append(position)
        seconds += segments[position]["duration"]
    return [(p, math.ceil(kmeans.sample_frames * segments[p]["duration"] / seconds)) for p in sorted(chosen)]


def _sample_folder(config: Config, store: Store) -> str:
    """Where the sample phase writes: named by what the sample depends on (the config and the manifest),
    never by how it was sharded, so a sample of other data or another config is never picked up."""
    manifest = inputs(config, store)[MANIFEST]
    return f"{SAMPLE}/{hashlib.sha256(f'{config.stage_hash(TOKENIZE)}:{manifest}'.encode()).hexdigest()[:16]}"


def _cache_key(folder: str, segment_id: str) -> str:
    return f"{folder}/{FEATURE_CACHE}/{segment_id}.npy"


def sample(context: Context) -> dict[str, Any]:
    """Features of this shard's share of the sample segments; a seeded choice of frames from each."""
    config, store = context.config, context.store
    folder = _sample_folder(config, store)
    key = f"{folder}/{context.shard.name}.npz"
    if store.exists(key) and not context.force:
        return {"sample": key, "resumed": True}
    segments = _segments(store)
    extractor = _extractor(context)
    cache = getattr(extractor, "costly", False)
    plan = dict(sample_plan(segments, config))  # manifest position -> frame quota
    groups = context.shard.take(_groups([{**segments[p], "position": p} for p in plan], config))
    picks: dict[int, np.ndarray] = {}
    rows = tqdm(_extracted(store, extractor, groups, config), total=sum(map(len, groups)),
                desc=f"sample {context.shard.name}", unit="seg", mininterval=2.0, disable=None)
    for segment, features in rows:
        if cache:
            store.write_bytes(_cache_key(folder, segment["id"]), _npy(features))
        rng = np.random.default_rng([config.tokenize.kmeans.seed, _stable_number(segment["id"])])
        quota = min(plan[segment["position"]], len(features))
        picks[segment["position"]] = features[np.sort(rng.choice(len(features), size=quota, replace=False))]
    mine = sorted(picks)  # manifest order, whatever order the groups were extracted in
    frames = [picks[position] for position in mine]
    positions = [np.full(len(picks[position]), position, dtype=np.int64) for position in mine]
    buffer = io.BytesIO()
    np.savez(buffer, frames=np.concatenate(frames) if frames else np.zeros((0, extractor.dim), np.float32),
             positions=np.concatenate(positions) if positions else np.zeros(0, np.int64),
             segments=np.array(mine, dtype=np.int64))
    store.write_json(f"{folder}/{SAMPLE_FEATURES}", extractor.fingerprint())
    store.write_bytes(key, buffer.getvalue())
    return {"sample": key, "frames": int(sum(len(f) for f in frames))}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Phase: fit


def fit(context: Context) -> dict[str, Any]:
    """Fit the codebook on the pooled sample, in manifest order so the shard count does not matter."""
    config, store = context.config, context.store
    config_hash = config.stage_hash(TOKENIZE)
    folder = _sample_folder(config, store)
    pooled, positions = _pooled_sample(store, folder, config)
    # The sample's content, not its files: the same for any shard count.
    sample_hash = hashlib.sha256(positions.tobytes() + np.ascontiguousarray(pooled, np.float32).tobytes()).hexdigest()
    if not context.force and store.exists(CODEBOOK_FINGERPRINT):
        saved = read_fingerprint(store)
        if saved.get("config_hash") == config_hash and saved.get("sample_hash") == sample_hash:
            return {"codebook": saved["hash"], "resumed": True}
    features = store.read_json(f"{folder}/{SAMPLE_FEATURES}")
    fingerprint = {**features, "config_hash": config_hash, "sample_hash": sample_hash}
    codebook = fit_codebook(pooled, config.tokenize.kmeans, fingerprint)
    codebook.save(store, CODEBOOK)
    return {"codebook": codebook.hash, "sample_frames": int(len(pooled))}


def _pooled_sample(store: Store, folder: str, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The sample frames (N, dim) and their manifest positions (N,), in manifest order.

    The shard files are found by listing, not from `tokenize.shards` (a runner may pass another
    `--shard-count`); a set counts only when its shards cover the whole sample plan, and files of
    another shard count (an earlier run) are either a complete set with the same content or ignored.
    """
    sets: dict[int, list[str]] = {}
    for key in store.list(f"{folder}/"):
        found = _SHARD_FILE.fullmatch(key.rsplit("/", 1)[-1])
        if found:
            sets.setdefault(int(found.group(2)), []).append(key)
    planned = sorted(p for p, _ in sample_plan(_segments(store), config))
    wanted = config.tokenize.shards
    for count in sorted(sets, key=lambda c: (c != wanted, c)):
        if len(sets[count]) != count:
            continue
        frames, positions, covered = [], [], []
        for key in sorted(sets[count]):
            with np.load(io.BytesIO(store.read_bytes(key)), allow_pickle=False) as shard:
                frames.append(shard["frames"])
                positions.append(shard["positions"])
                covered.append(shard["segments"] if "segments" in shard.files else np.zeros(0, np.int64))
        if sorted(np.concatenate(covered).tolist()) != planned:
            continue
        order = np.argsort(np.concatenate(positions), kind="stable")
        return np.concatenate(frames)[order], np.concatenate(positions)[order]
    have = len(sets.get(wanted, []))
    raise IncompleteError(
        f"tokenize fit: {have} of {wanted} sample shards under {store.url(folder)} (and no other complete set); "
        "run the remaining shards of phase sample"
    )


_SHARD_FILE = re.compile(r"(\d{5})-of-(\d{5})\.npz")


# ---------------------------------------------------------------------------------------------
# Phase: assign (sharded)


def run_lengths(units: np.ndarray, hop_seconds: float) -> dict[str, list]:
    """Run-length form of a unit sequence: the units, their durations in frames and start times in seconds."""
    if len(units) == 0:
        return {"run_units": [], "run_durations": [], "run_starts": []}
    change = np.flatnonzero(np.diff(units)) + 1
    starts = np.concatenate([[0], change])
    durations = np.diff(np.concatenate([starts, [len(units)]]))
    return {
        "run_units": units[starts].tolist(),
        "run_durations": durations.tolist(),
        "run_starts": [round(float(s) * hop_seconds, 4) for s in starts],
    }


def assign(context: Context) -> dict[str, Any]:
    """Units for this shard's segments; each segment is written as soon as it is done, so a killed shard resumes.

    Segments the sample phase kept features of are read from its cache; the extractor (and with it
    torch and the encoder) is only built when a segment is not there, and the rest go through it in
    batches (`tokenize.features.batch_seconds`).
    """
    config, store = context.config, context.store
    codebook = Codebook.load(store, CODEBOOK)
    folder = _sample_folder(config, store)
    if store.exists(f"{folder}/{SAMPLE_FEATURES}"):
        check_compatible(codebook.fingerprint, store.read_json(f"{folder}/{SAMPLE_FEATURES}"))
        hop_seconds = codebook.fingerprint["hop_seconds"]
    else:
        extractor = _checked_extractor(context, codebook)
        hop_seconds = extractor.hop_samples / extractor.sample_rate
    segments = _segments(store)
    in_cache = set(store.list(f"{folder}/{FEATURE_CACHE}/"))  # one listing, not a request per segment
    cached = context.shard.take([s for s in segments if _cache_key(folder, s["id"]) in in_cache])
    groups = context.shard.take(_groups([s for s in segments if _cache_key(folder, s["id"]) not in in_cache], config))
    shard = str(context.shard.index)
    mine = [*cached, *itertools.chain(*groups)]
    done_before = set() if context.force else {
        s["id"] for s in mine if _part_is_current(store, f"{PARTS}/{s['id']}.json", codebook.hash)
    }
    context.metrics.gauge("stage_items_planned", len(mine), stage="tokenize", shard=shard)
    context.metrics.gauge("stage_items_done", len(done_before), stage="tokenize", shard=shard)
    cached = [s for s in cached if s["id"] not in done_before]
    # A group with any segment left is extracted whole, so each segment keeps its batch neighbours.
    groups = [group for group in groups if any(s["id"] not in done_before for s in group)]

    def from_cache() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        for segment in cached:
            yield segment, np.load(io.BytesIO(store.read_bytes(_cache_key(folder, segment["id"]))), allow_pickle=False)

    extracted = _extracted(store, _checked_extractor(context, codebook), groups, config) if groups else ()
    done = 0
    rows = tqdm(itertools.chain(from_cache(), extracted), total=len(cached) + sum(map(len, groups)),
                desc=f"assign {context.shard.name}", unit="seg", mininterval=2.0, disable=None)
    for segment, features in rows:
        if segment["id"] in done_before:
            continue
        units = codebook.assign(features)
        store.write_json(f"{PARTS}/{segment['id']}.json", {
            "id": segment["id"], "speaker": segment["speaker"], "duration": segment["duration"],
            "hop_seconds": hop_seconds, "codebook": codebook.hash, "units": units.tolist(),
            **run_lengths(units, hop_seconds),
        })
        done += 1
        context.metrics.gauge("stage_items_done", len(done_before) + done, stage="tokenize", shard=shard)
    return {"assigned": done, "resumed": len(done_before), "from_sample_cache": len(cached)}


def _checked_extractor(context: Context, codebook: Codebook) -> feats.FeatureExtractor:
    extractor = _extractor(context)
    check_compatible(codebook.fingerprint, extractor.fingerprint())
    return extractor


def _part_is_current(store: Store, key: str, codebook_hash: str) -> bool:
    return store.exists(key) and store.read_json(key).get("codebook") == codebook_hash


# ---------------------------------------------------------------------------------------------
# Phase: merge


def merge(context: Context) -> dict[str, Any]:
    """Join the parts into `units.jsonl` in manifest order, with a report on unit usage."""
    config, store = context.config, context.store
    codebook = Codebook.load(store, CODEBOOK)
    segments = _segments(store)
    missing = [s["id"] for s in segments if not _part_is_current(store, f"{PARTS}/{s['id']}.json", codebook.hash)]
    if missing:
        raise IncompleteError(
            f"tokenize merge: {len(missing)} of {len(segments)} segments have no units yet (first: {missing[0]}); "
            "run the remaining shards of phase assign"
        )
    usage = np.zeros(codebook.k, dtype=np.int64)
    runs = 0

    def rows():
        nonlocal runs
        for segment in segments:
            part = store.read_json(f"{PARTS}/{segment['id']}.json")
            usage[:] += np.bincount(part["units"], minlength=codebook.k)
            runs += len(part["run_units"])
            yield part

    store.write_jsonl(UNITS, rows())
    share = usage / max(1, usage.sum())
    nonzero = share[share > 0]
    report = {
        "segments": len(segments), "frames": int(usage.sum()), "runs": runs, "k": codebook.k,
        "codebook": codebook.hash, "units_used": int((usage > 0).sum()),
        "perplexity": float(np.exp(-(nonzero * np.log(nonzero)).sum())) if nonzero.size else 0.0,
        "mean_run_frames": float(usage.sum() / max(1, runs)), "usage": usage.tolist(),
    }
    store.write_json(REPORT, report)
    context.metrics.gauge("tokenize_units_used", report["units_used"])
    context.metrics.gauge("tokenize_unit_perplexity", report["perplexity"])
    write_success(
        store, "tokenize", config_hash=config.stage_hash(TOKENIZE), inputs=inputs(config, store),
        outputs=[UNITS, REPORT, CODEBOOK_CENTROIDS, CODEBOOK_FINGERPRINT],
        output_sets={f"{PARTS}/": len(segments)}, started=context.started,
        extra={"stage": "tokenize", "config": config.to_dict()["tokenize"], "codebook": codebook.fingerprint},
    )
    for key in list(store.list(f"{_sample_folder(config, store)}/{FEATURE_CACHE}/")):
        store.delete(key)  # only assign reads the cache, and every segment has its units now
    return {key: report[key] for key in ("segments", "frames", "units_used", "perplexity")}
