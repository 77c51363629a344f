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
"""

from __future__ import annotations

import hashlib
import io
import math
import re
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


def _extractor(config: Config) -> feats.FeatureExtractor:
    return feats.build_extractor(config.tokenize.features, config.prepare.sample_rate)


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
    extractor = _extractor(config)
    cache = getattr(extractor, "costly", False)
    mine = context.shard.take(sample_plan(segments, config))
    frames, positions = [], []
    for position, quota in tqdm(mine, desc=f"sample {context.shard.name}", unit="seg", mininterval=2.0, disable=None):
        segment = segments[position]
        features = feats.extract(extractor, _load_audio(store, segment["audio"]), config.tokenize.features)
        if cache:
            store.write_bytes(_cache_key(folder, segment["id"]), _npy(features))
        rng = np.random.default_rng([config.tokenize.kmeans.seed, _stable_number(segment["id"])])
        picked = np.sort(rng.choice(len(features), size=min(quota, len(features)), replace=False))
        frames.append(features[picked])
        positions.append(np.full(len(picked), position, dtype=np.int64))
    buffer = io.BytesIO()
    np.savez(buffer, frames=np.concatenate(frames) if frames else np.zeros((0, extractor.dim), np.float32),
             positions=np.concatenate(positions) if positions else np.zeros(0, np.int64),
             segments=np.array([position for position, _ in mine], dtype=np.int64))
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
    torch and the encoder) is only built for the first segment that needs it.
    """
    config, store = context.config, context.store
    codebook = Codebook.load(store, CODEBOOK)
    folder = _sample_folder(config, store)
    extractor: feats.FeatureExtractor | None = None
    if store.exists(f"{folder}/{SAMPLE_FEATURES}"):
        check_compatible(codebook.fingerprint, store.read_json(f"{folder}/{SAMPLE_FEATURES}"))
        hop_seconds = codebook.fingerprint["hop_seconds"]
    else:
        extractor = _extractor(config)
        check_compatible(codebook.fingerprint, extractor.fingerprint())
        hop_seconds = extractor.hop_samples / extractor.sample_rate
    mine = context.shard.take(_segments(store))
    in_cache = set(store.list(f"{folder}/{FEATURE_CACHE}/"))  # one listing, not a request per segment
    done = resumed = cached = 0
    shard = str(context.shard.index)
    context.metrics.gauge("stage_items_planned", len(mine), stage="tokenize", shard=shard)
    context.metrics.gauge("stage_items_done", 0, stage="tokenize", shard=shard)
    for segment in tqdm(mine, desc=f"assign {context.shard.name}", unit="seg", mininterval=2.0, disable=None):
        key = f"{PARTS}/{segment['id']}.json"
        if not context.force and _part_is_current(store, key, codebook.hash):
            resumed += 1
            context.metrics.gauge("stage_items_done", done + resumed, stage="tokenize", shard=shard)
            continue
        cache_key = _cache_key(folder, segment["id"])
        if cache_key in in_cache:
            features = np.load(io.BytesIO(store.read_bytes(cache_key)), allow_pickle=False)
            cached += 1
        else:
            if extractor is None:
                extractor = _extractor(config)
                check_compatible(codebook.fingerprint, extractor.fingerprint())
            features = feats.extract(extractor, _load_audio(store, segment["audio"]), config.tokenize.features)
        units = codebook.assign(features)
        store.write_json(key, {
            "id": segment["id"], "speaker": segment["speaker"], "duration": segment["duration"],
            "hop_seconds": hop_seconds, "codebook": codebook.hash, "units": units.tolist(),
            **run_lengths(units, hop_seconds),
        })
        done += 1
        context.metrics.gauge("stage_items_done", done + resumed, stage="tokenize", shard=shard)
    return {"assigned": done, "resumed": resumed, "from_sample_cache": cached}


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
