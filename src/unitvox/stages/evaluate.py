"""evaluate: resynthesise held-out segments and score them; quality gates set the exit code (for CI).

Run: unitvox evaluate --config jobs/base.yaml --run ./runs/exp1
     unitvox evaluate --config jobs/base.yaml --run ./runs/exp1 --set evaluate.checkpoint=s3://bucket/ckpt/best.pt
Writes evaluate/metrics.json, evaluate/summary.md, evaluate/junit.xml and evaluate/report.html (with
its audio under evaluate/audio/); exits 3 when a gate fails. Every held-out segment is scored by
independent listeners (evaluation/scoring.py), for the resynthesis and for the original itself.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from tqdm import tqdm

from unitvox import exitcodes
from unitvox.config import Config
from unitvox.prometheus import MetricsSink
from unitvox.evaluation import (
    SilentInputError, build_speaker_embedder, cosine_similarity, evaluate_gates, gates_exit_code, gates_from_config,
    junit_xml, length_ratio, level_summary, mel_cepstral_distortion, metrics_json, snr_db, summarise, summary_markdown,
)
from unitvox.evaluation.html_report import UtteranceView, mel_comparison_png, render_report
from unitvox.evaluation.registry import EVALUATION_METRICS
from unitvox.evaluation.scoring import REFERENCE_TRANSCRIPT, ListenerSettings, Listeners
from unitvox.evaluation.verification import equal_error_rate, verification_trials
from unitvox.errors import IncompleteError
from unitvox.layout import (
    CODEBOOK, EVALUATE_JUNIT as JUNIT, EVALUATE_METRICS as METRICS, EVALUATE_PARTS as PARTS, EVALUATE_REPORT as REPORT,
    EVALUATE_SUMMARY as SUMMARY, MANIFEST, SPLIT, UNITS, evaluate_audio, success,
)
from unitvox.stages import Context, Phase
from unitvox.stages.record import fingerprint, upstream, write_success
from unitvox.units.features import build_extractor
from unitvox.units.features import extract as extract_features
from unitvox.units.kmeans import Codebook
from unitvox.store import Store
from unitvox.vocoder.dataset import AudioReader, UnitAudioDataset, load_items, speaker_index
from unitvox.vocoder.duration import collapse, expand
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
    listeners = Listeners(listener_settings(config))
    transcripts = reference_transcripts(store)
    in_report = {item.segment_id for item in items[: config.evaluate.report_items]}
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
        row, embeddings = score_item(item, reference, estimate, rate, embedder)
        row["unit_match"] = round_trip.match(item.units, estimate) if round_trip else math.nan
        if vocoder.deduplicated:
            row.update(predicted_duration_row(vocoder, item.units, len(reference), clip))
        scored = listeners.score(reference, estimate, rate, transcripts.get(item.segment_id))
        row.update(scored.resynthesis)
        original = {**_original_ceiling(row), **scored.original}
        if item.segment_id in in_report:
            _write_listening_files(store, item.segment_id, reference, estimate, rate)
        store.write_json(key, {"checkpoint": vocoder.sha256, "row": row, "original": original,
                               "texts": scored.texts, "embeddings": embeddings})
        done += 1
        context.metrics.gauge("stage_items_done", done + resumed, stage="evaluate", shard=shard)
    return {"scored": done}


def predicted_duration_row(vocoder: Vocoder, units, reference_samples: int, clip: np.ndarray | None) -> dict[str, float]:
    """A deduplicated vocoder's own timing: the item's runs vocoded with predicted durations.

    `duration_error_frames` is the mean absolute error of the predicted durations in frames per run;
    `predicted_length_ratio` the length of that audio over the original's.
    """
    runs, durations = collapse(units)
    if len(runs) == 0:
        return {"duration_error_frames": math.nan, "predicted_length_ratio": math.nan}
    predicted = vocoder.predict_durations(runs)
    wave = vocoder.generate(expand(runs, predicted), clip)
    return {"duration_error_frames": float(np.mean(np.abs(predicted - durations))),
            "predicted_length_ratio": length_ratio(reference_samples, len(wave))}


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


def listener_settings(config: Config) -> ListenerSettings:
    evaluate = config.evaluate
    return ListenerSettings(asr_engine=evaluate.asr.engine, asr_model=evaluate.asr.model,
                            language=evaluate.asr.language, pitch_tracker=evaluate.pitch_tracker,
                            dnsmos=evaluate.dnsmos, distortions=evaluate.distortions)


def reference_transcripts(store: Store) -> dict[str, str]:
    """segment id -> the corpus's transcript, where prepare found one (whole-file segments only)."""
    return {row["id"]: row["text"] for row in store.read_jsonl(MANIFEST) if row.get("text")}


def score_item(item, reference: np.ndarray, estimate: np.ndarray, rate: int,
               embedder) -> tuple[dict[str, Any], dict[str, list[float]] | None]:
    """One utterance's own reconstruction figures, and both sides' speaker embeddings (None without)."""
    valid = min(len(reference), len(estimate))
    embeddings = _embeddings(embedder, reference, estimate, rate) if embedder else None
    row = {
        "utterance": item.segment_id, "speaker": item.speaker, "duration": round(len(reference) / rate, 3),
        "snr_db": snr_db(reference, estimate, valid),
        "mcd_mfcc_frames": _or_nan(lambda: mel_cepstral_distortion(reference, estimate, rate, valid)),
        "length_ratio": length_ratio(len(reference), len(estimate)),
        "speaker_similarity": cosine_similarity(np.asarray(embeddings["original"]),
                                                np.asarray(embeddings["resynthesis"])) if embeddings else math.nan,
    }
    for side, wave in (("reference", reference), ("estimate", estimate)):
        row.update({f"{side}_{name}": value for name, value in level_summary(wave, valid).items()})
    return row, embeddings


def _embeddings(embedder, reference: np.ndarray, estimate: np.ndarray, rate: int) -> dict[str, list[float]] | None:
    try:
        return {"original": embedder.embed(reference, rate).tolist(),
                "resynthesis": embedder.embed(estimate, rate).tolist()}
    except SilentInputError:  # a silent side has no voice: NaN similarity, left out of the EER trials
        return None


def _original_ceiling(row: dict[str, Any]) -> dict[str, Any]:
    """The original's own row for the figures that compare with it: each at its ideal."""
    names = ("mcd_mfcc_frames", "length_ratio", "speaker_similarity", "unit_match", "duration_error_frames",
             "predicted_length_ratio")
    return {"utterance": row["utterance"], "speaker": row["speaker"],
            **{name: EVALUATION_METRICS[name].ideal for name in names if not _is_nan(row.get(name))}}


def _is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _write_listening_files(store: Store, segment_id: str, reference: np.ndarray, estimate: np.ndarray,
                           rate: int) -> None:
    """The two waves and their mel spectrograms, for evaluate/report.html."""
    import soundfile

    for kind, wave in (("original.wav", reference), ("resynthesis.wav", estimate)):
        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(wave, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
        store.write_bytes(evaluate_audio(segment_id, kind), buffer.getvalue())
    store.write_bytes(evaluate_audio(segment_id, "mel.png"), mel_comparison_png(reference, estimate, rate))


def _or_nan(compute) -> float:
    try:
        return float(compute())
    except ValueError:  # too short to have a single analysis window
        return math.nan


def merge(context: Context) -> dict[str, Any]:
    """Summaries (the resynthesis's and the originals'), speaker EER, gates and the four reports."""
    config, store = context.config, context.store
    items, _ = held_out(store, config)
    missing = [i.segment_id for i in items if not store.exists(f"{PARTS}/{i.segment_id}.json")]
    if missing:
        raise IncompleteError(f"evaluate merge: {len(missing)} segments not scored yet (first: {missing[0]})")
    parts = [store.read_json(f"{PARTS}/{item.segment_id}.json") for item in items]
    rows, originals = [part["row"] for part in parts], [part.get("original", {}) for part in parts]
    summary, original_summary = summarise(rows), summarise(originals)
    _add_speaker_eer(parts, summary, original_summary)
    results = evaluate_gates(summary, gates_from_config(config.evaluate.gates))
    notes = _notes(parts)
    store.write_text(METRICS, metrics_json(rows, summary, results, notes=notes,
                                           original={"summary": original_summary, "utterances": originals}))
    title = f"Vocoder evaluation of {config.evaluate.checkpoint} ({len(rows)} held-out segments)"
    store.write_text(SUMMARY, summary_markdown(summary, results, rows, title, original_summary=original_summary,
                                               notes=notes))
    store.write_text(JUNIT, junit_xml(results))
    outputs = [METRICS, SUMMARY, JUNIT]
    if config.evaluate.report_items:
        outputs += _write_report(store, parts[: config.evaluate.report_items], title, results, summary,
                                 original_summary, notes)
    write_success(store, "evaluate", config_hash=config.stage_hash("evaluate"), inputs=inputs(config, store),
                  outputs=outputs, started=context.started,
                  extra={"stage": "evaluate", "passed": gates_exit_code(results) == 0})
    failed = [r.message for r in results if not r.passed]
    _export_results(context.metrics, summary, original_summary, passed=not failed)
    return {"segments": len(rows), **{k: round(v, 3) for k, v in summary.items() if k.endswith("_mean")},
            "gates": "all passed" if not failed else "FAILED: " + "; ".join(failed)}


def _add_speaker_eer(parts: list[dict], summary: dict[str, float], original_summary: dict[str, float]) -> None:
    """Speaker-verification EER over the held-out set (evaluation/verification.py): originals against
    resynthesis, and originals against originals (the embedder's own ceiling)."""
    scored = [part for part in parts if part.get("embeddings")]
    if len({part["row"]["speaker"] for part in scored}) < 2:
        return  # one speaker: no different-speaker trials
    speakers = [part["row"]["speaker"] for part in scored]
    real = np.array([part["embeddings"]["original"] for part in scored])
    resynthesis = np.array([part["embeddings"]["resynthesis"] for part in scored])
    for target, tests in ((summary, resynthesis), (original_summary, real)):
        trials = verification_trials(real, tests, speakers)
        eer = equal_error_rate(trials.scores, trials.same_speaker).eer
        # One figure for the whole set: its mean and median are the same number.
        target.update(speaker_eer_mean=eer, speaker_eer_median=eer, speaker_eer_count=len(scored),
                      speaker_eer_nan_count=len(parts) - len(scored))


def _notes(parts: list[dict]) -> list[str]:
    """What scored the audio and what the reference transcripts were, for every report."""
    texts = [part.get("texts", {}) for part in parts]
    notes = sorted({text["asr_note"] for text in texts if text.get("asr_note")})
    with_reference = [text for text in texts if "reference_source" in text]
    if with_reference:
        truth = sum(text["reference_source"] == REFERENCE_TRANSCRIPT for text in with_reference)
        notes.append(f"WER/CER references: the corpus transcript for {truth} of {len(with_reference)} segments, "
                     f"the ASR transcript of the original for the other {len(with_reference) - truth} "
                     "(there the original's WER is 0 by definition)")
    return notes


def _write_report(store: Store, parts: list[dict], title: str, results, summary, original_summary,
                  notes: list[str]) -> list[str]:
    """evaluate/report.html over `parts`; returns the keys it wrote or links to."""
    views, keys = [], [REPORT]
    for part in parts:
        segment = part["row"]["utterance"]
        audio = [evaluate_audio(segment, kind) for kind in ("original.wav", "resynthesis.wav")]
        png = evaluate_audio(segment, "mel.png")
        if not all(store.exists(key) for key in (*audio, png)):
            continue  # scored before report files existed: rescore with --force to listen to it
        relative = [key.removeprefix(f"{REPORT.rpartition('/')[0]}/") for key in audio]
        views.append(UtteranceView(segment, part["row"]["speaker"], *relative, store.read_bytes(png),
                                   part.get("texts", {}), part.get("original", {}), part["row"]))
        keys += [*audio, png]
    failed = sum(not r.passed for r in results)
    verdict = (f"FAIL ({failed} of {len(results)} gates failed)" if failed
               else f"PASS ({len(results)} of {len(results)} gates passed)")
    gates = [(r.name, r.passed, r.message) for r in results]
    store.write_text(REPORT, render_report(title=title, verdict=verdict, gates=gates, summary=summary,
                                           original_summary=original_summary, utterances=views, notes=notes))
    return keys


def _export_results(metrics: MetricsSink, summary: dict[str, float], original_summary: dict[str, float], *,
                    passed: bool) -> None:
    """Every registered metric's mean as its gauge, for the resynthesis and for the original."""
    for spec in EVALUATION_METRICS.values():
        for audio, figures in (("resynthesis", summary), ("original", original_summary)):
            value = figures.get(f"{spec.name}_mean")
            if value is not None and math.isfinite(value):
                metrics.gauge(spec.gauge, value, audio=audio)
    metrics.gauge("evaluate_gates_passed", float(passed))


def exit_code(config: Config, store: Store) -> int:
    """3 when the latest evaluation failed a gate (also when the stage was skipped as up to date)."""
    key = success("evaluate")
    record = store.read_json(key) if store.exists(key) else {}
    return 0 if record.get("passed", True) else exitcodes.GATES_FAILED
