"""evaluate: resynthesise held-out segments and score them; quality gates set the exit code (for CI).

Run: unitvox evaluate --config jobs/base.yaml --run ./runs/exp1
     unitvox evaluate --config jobs/base.yaml --run ./runs/exp1 --set evaluate.checkpoint=s3://bucket/ckpt/best.pt
Writes evaluate/metrics.json, evaluate/summary.md, evaluate/junit.xml; exits 3 when a gate fails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from tqdm import tqdm

from unitvox import exitcodes
from unitvox.config import Config
from unitvox.prometheus import MetricsSink
from unitvox.evaluation import (
    build_speaker_embedder, evaluate_gates, gates_exit_code, gates_from_config, junit_xml, length_ratio,
    level_summary, mel_cepstral_distortion, metrics_json, snr_db, speaker_similarity, summarise, summary_markdown,
)
from unitvox.errors import IncompleteError
from unitvox.layout import (
    CODEBOOK, EVALUATE_JUNIT as JUNIT, EVALUATE_METRICS as METRICS, EVALUATE_PARTS as PARTS, EVALUATE_SUMMARY as SUMMARY,
    SPLIT, UNITS, success,
)
from unitvox.stages import Context, Phase
from unitvox.stages.record import fingerprint, upstream, write_success
from unitvox.units.features import build_extractor
from unitvox.units.features import extract as extract_features
from unitvox.units.kmeans import Codebook
from unitvox.store import Store
from unitvox.vocoder.dataset import AudioReader, UnitAudioDataset, load_items, speaker_index
from unitvox.vocoder.inference import Vocoder, checkpoint_location

PHASES = (Phase("score", sharded=True), Phase("merge"))


def inputs(config: Config, store: Store) -> dict[str, Any]:
    units = upstream(store, "tokenize", UNITS, "evaluate")
    source, key = checkpoint_location(store, config.evaluate.checkpoint)
    return {**units, "checkpoint": {"uri": source.url(key), **fingerprint(source, key)}}


def held_out(store: Store, config: Config) -> tuple[list, UnitAudioDataset]:
    """The validation segments training never saw (up to max_items), and a reference source per speaker."""
    if not store.exists(SPLIT):
        raise IncompleteError(f"evaluate needs the held-out split {store.url(SPLIT)}: run train first")
    validation = store.read_json(SPLIT)["validation"]
    everything = load_items(store)
    by_id = {item.segment_id: item for item in everything}
    # The split's own order, whatever order the manifest or the shards produced.
    chosen = [by_id[segment] for segment in validation if segment in by_id][: config.evaluate.max_items]
    reference_samples = int(config.train.speaker.reference_seconds * config.prepare.sample_rate)
    references = UnitAudioDataset(everything, AudioReader(store), frames=1, hop=config.train.generator.hop_samples,
                                  pad_unit=0, speakers=speaker_index(everything), crop=False,
                                  seed=config.train.seed, reference_samples=reference_samples)
    return chosen, references


def score(context: Context) -> dict[str, Any]:
    """Resynthesise and score this shard's held-out segments; one part file each, so reruns resume."""
    config, store = context.config, context.store
    items, references = held_out(store, config)
    vocoder = Vocoder(config, store, config.evaluate.checkpoint)
    embedder = None if config.evaluate.speaker_embedder == "none" else build_speaker_embedder(
        config.evaluate.speaker_embedder)
    reader, rate = AudioReader(store), config.prepare.sample_rate
    round_trip = UnitRoundTrip(config, store) if config.evaluate.unit_match else None
    position = {item.segment_id: i for i, item in enumerate(references.items)}
    mine, shard = context.shard.take(items), str(context.shard.index)
    done = resumed = 0
    context.metrics.gauge("stage_items_planned", len(mine), stage="evaluate", shard=shard)
    context.metrics.gauge("stage_items_done", 0, stage="evaluate", shard=shard)
    for item in tqdm(mine, desc=f"evaluate {context.shard.name}", unit="seg", disable=None):
        key = f"{PARTS}/{item.segment_id}.json"
        if store.exists(key) and not context.force and store.read_json(key).get("checkpoint") == vocoder.sha256:
            resumed += 1
            context.metrics.gauge("stage_items_done", done + resumed, stage="evaluate", shard=shard)
            continue
        reference = reader.read(item.audio_key)
        clip = references.reference(position[item.segment_id]) if vocoder.conditioned else None
        estimate = vocoder.generate(item.units, clip)
        row = score_item(item, reference, estimate, rate, embedder)
        row["unit_match"] = round_trip.match(item.units, estimate) if round_trip else math.nan
        store.write_json(key, {"checkpoint": vocoder.sha256, "row": row})
        done += 1
        context.metrics.gauge("stage_items_done", done + resumed, stage="evaluate", shard=shard)
    return {"scored": done}


class UnitRoundTrip:
    """Tokenizes audio again with the run's own extractor and codebook, to compare with the input units."""

    def __init__(self, config: Config, store: Store):
        self.settings = config.tokenize.features
        self.extractor = build_extractor(self.settings, config.prepare.sample_rate)
        self.codebook = Codebook.load(store, CODEBOOK)

    def match(self, units, wave: np.ndarray) -> float:
        """Share of frames whose unit is the same after vocoding and tokenizing again."""
        again = self.codebook.assign(extract_features(self.extractor, wave, self.settings))
        count = min(len(again), len(units))
        return float(np.mean(np.asarray(units[:count]) == again[:count])) if count else math.nan


def score_item(item, reference: np.ndarray, estimate: np.ndarray, rate: int, embedder) -> dict[str, Any]:
    """One utterance's metrics; levels of both sides explain a negative SNR."""
    valid = min(len(reference), len(estimate))
    row = {
        "utterance": item.segment_id, "speaker": item.speaker, "duration": round(len(reference) / rate, 3),
        "snr_db": snr_db(reference, estimate, valid),
        "mcd": _or_nan(lambda: mel_cepstral_distortion(reference, estimate, rate, valid)),
        "length_ratio": length_ratio(len(reference), len(estimate)),
        "speaker_similarity": speaker_similarity(embedder, reference, estimate, rate) if embedder else math.nan,
    }
    for side, wave in (("reference", reference), ("estimate", estimate)):
        row.update({f"{side}_{name}": value for name, value in level_summary(wave, valid).items()})
    return row


def _or_nan(compute) -> float:
    try:
        return float(compute())
    except ValueError:  # too short to have a single analysis window
        return math.nan


def merge(context: Context) -> dict[str, Any]:
    """Summaries, gates and the three reports, from every segment's part."""
    config, store = context.config, context.store
    items, _ = held_out(store, config)
    missing = [i.segment_id for i in items if not store.exists(f"{PARTS}/{i.segment_id}.json")]
    if missing:
        raise IncompleteError(f"evaluate merge: {len(missing)} segments not scored yet (first: {missing[0]})")
    rows = [store.read_json(f"{PARTS}/{item.segment_id}.json")["row"] for item in items]
    summary = summarise(rows)
    results = evaluate_gates(summary, gates_from_config(dataclasses.asdict(config.evaluate.gates)))
    store.write_text(METRICS, metrics_json(rows, summary, results))
    title = f"Vocoder evaluation of {config.evaluate.checkpoint} ({len(rows)} held-out segments)"
    store.write_text(SUMMARY, summary_markdown(summary, results, rows, title))
    store.write_text(JUNIT, junit_xml(results))
    write_success(store, "evaluate", config_hash=config.stage_hash("evaluate"), inputs=inputs(config, store),
                  outputs=[METRICS, SUMMARY, JUNIT], started=context.started,
                  extra={"stage": "evaluate", "passed": gates_exit_code(results) == 0})
    failed = [r.message for r in results if not r.passed]
    _export_results(context.metrics, summary, passed=not failed)
    return {"segments": len(rows), **{k: round(v, 3) for k, v in summary.items() if k.endswith("_mean")},
            "gates": "all passed" if not failed else "FAILED: " + "; ".join(failed)}


# Summary mean -> the gauge it is pushed as.
RESULT_METRICS = {
    "snr_db_mean": "evaluate_snr_decibels", "mcd_mean": "evaluate_mel_cepstral_distortion_decibels",
    "length_ratio_mean": "evaluate_length_ratio", "speaker_similarity_mean": "evaluate_speaker_similarity",
    "unit_match_mean": "evaluate_unit_match_ratio",
}


def _export_results(metrics: MetricsSink, summary: dict[str, float], *, passed: bool) -> None:
    for key, name in RESULT_METRICS.items():
        if key in summary:
            metrics.gauge(name, summary[key])
    metrics.gauge("evaluate_gates_passed", float(passed))


def exit_code(config: Config, store: Store) -> int:
    """3 when the latest evaluation failed a gate (also when the stage was skipped as up to date)."""
    key = success("evaluate")
    record = store.read_json(key) if store.exists(key) else {}
    return 0 if record.get("passed", True) else exitcodes.GATES_FAILED
