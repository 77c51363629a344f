"""Calibration on real speech: planted degradations move every metric the way it should.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -s tests/evaluation/test_calibration.py  (-s prints the table)

Six utterances (three readers, two each, 4 s) of the speech corpus, each scored against itself
(the original), with white noise at 20 dB and at 0 dB SNR, low-passed at 2 kHz, and replaced by a
different reader's utterance of the same length. Expectations are orderings and ideals, never figures
that one corpus produces: the original scores at the metric's ideal (WER 0 against its own ASR
transcript, FFE 0, MCD 0, PESQ 4.64, STOI 1); more noise is never better; unrelated speech is worse
than mild noise for what follows content (words, pitch contour, intelligibility, voice).

DNSMOS has no reference, so it is only asked about noise: a different utterance is natural speech
(and scores as such), and band-limiting to 2 kHz is not reliably penalised by it (on LibriSpeech
test-other the low-passed audio loses its background hiss and can score higher).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal

from unitvox.evaluation.asr import build_asr_engine, error_rates
from unitvox.evaluation.distortion import mel_cepstral_distortion_dtw, pesq_wideband, stoi
from unitvox.evaluation.naturalness import Dnsmos
from unitvox.evaluation.pitch import f0_errors, track_f0
from unitvox.evaluation.verification import equal_error_rate, verification_trials

for package in ("pocketsphinx", "speechmos", "pesq", "pystoi", "jiwer"):
    pytest.importorskip(package)

RATE = 16000
CONDITIONS = ("original", "noise_20db", "noise_0db", "lowpass_2khz", "other_utterance")
# metric -> True when higher is better
HIGHER_IS_BETTER = {
    "wer": False, "cer": False, "gpe": False, "vde": False, "ffe": False, "f0_rmse_cents": False,
    "mcd_dtw": False, "pesq": True, "stoi": True, "dnsmos_overall": True, "dnsmos_signal": True,
    "dnsmos_background": True, "speaker_eer": False,
}
IDEAL = {"wer": 0.0, "cer": 0.0, "gpe": 0.0, "vde": 0.0, "ffe": 0.0, "f0_rmse_cents": 0.0, "mcd_dtw": 0.0,
         "pesq": 4.64, "stoi": 1.0}
REFERENCE_METRICS = ("wer", "cer", "vde", "ffe", "mcd_dtw", "pesq", "stoi")  # compare with the original


def _with_noise(wave: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(wave))
    scale = np.sqrt(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (wave + scale * noise).astype(np.float32)


def _low_passed(wave: np.ndarray) -> np.ndarray:
    sections = scipy.signal.butter(8, 2000, btype="lowpass", fs=RATE, output="sos")
    return scipy.signal.sosfiltfilt(sections, wave).astype(np.float32)


def _degraded(utterances, index: int) -> dict[str, np.ndarray]:
    wave = utterances[index].wave
    # The same position two utterances on is always another reader (two utterances per reader).
    other = np.resize(utterances[(index + 2) % len(utterances)].wave, len(wave))
    return {"original": wave, "noise_20db": _with_noise(wave, 20.0, index), "noise_0db": _with_noise(wave, 0.0, index),
            "lowpass_2khz": _low_passed(wave), "other_utterance": other}


@pytest.fixture(scope="module")
def table(corpus_utterances) -> dict[str, dict[str, float]]:
    """condition -> metric -> mean over the six utterances (NaN-aware for GPE and F0 RMSE)."""
    utterances = corpus_utterances(3, 2, seconds=4.0)
    assert len({u.speaker for u in utterances}) == 3 and len(utterances) == 6
    engine, dnsmos = build_asr_engine("pocketsphinx"), Dnsmos()
    rows: dict[str, list[dict[str, float]]] = {condition: [] for condition in CONDITIONS}
    waves: dict[str, list[np.ndarray]] = {condition: [] for condition in CONDITIONS}
    for index, utterance in enumerate(utterances):
        transcript = engine.transcribe(utterance.wave, RATE)  # the reference: the original's own ASR
        pitch = track_f0(utterance.wave, RATE)
        for condition, wave in _degraded(utterances, index).items():
            rates = error_rates(transcript, engine.transcribe(wave, RATE))
            f0 = f0_errors(pitch, track_f0(wave, RATE))
            mos = dnsmos.score(wave, RATE)
            rows[condition].append({
                "wer": rates.wer, "cer": rates.cer, "gpe": f0.gpe, "vde": f0.vde, "ffe": f0.ffe,
                "f0_rmse_cents": f0.rmse_cents, "mcd_dtw": mel_cepstral_distortion_dtw(utterance.wave, wave, RATE),
                "pesq": pesq_wideband(utterance.wave, wave, RATE), "stoi": stoi(utterance.wave, wave, RATE),
                "dnsmos_overall": mos.overall, "dnsmos_signal": mos.signal, "dnsmos_background": mos.background,
            })
            waves[condition].append(wave)
    means = {condition: {metric: _mean([row[metric] for row in rows[condition]]) for metric in rows[condition][0]}
             for condition in CONDITIONS}
    for condition, eer in _speaker_eers(utterances, waves).items():
        means[condition]["speaker_eer"] = eer
    _print(means)
    return means


def _speaker_eers(utterances, waves) -> dict[str, float]:
    """condition -> EER of the originals (enrolment) against that condition (test); {} without resemblyzer."""
    try:
        from unitvox.evaluation.speaker import build_speaker_embedder

        embedder = build_speaker_embedder("resemblyzer")
    except ImportError:
        return {}
    speakers = [u.speaker for u in utterances]
    enrolment = np.stack([embedder.embed(u.wave, RATE) for u in utterances])
    eers = {}
    for condition, tests in waves.items():
        trials = verification_trials(enrolment, np.stack([embedder.embed(w, RATE) for w in tests]), speakers)
        eers[condition] = equal_error_rate(trials.scores, trials.same_speaker).eer
    return eers


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _print(means: dict[str, dict[str, float]]) -> None:
    metrics = list(next(iter(means.values())))
    print("\n| metric | " + " | ".join(CONDITIONS) + " |")
    print("|---|" + "---|" * len(CONDITIONS))
    for metric in metrics:
        print(f"| {metric} | " + " | ".join(f"{means[c].get(metric, math.nan):.3f}" for c in CONDITIONS) + " |")


def _worse(metric: str, a: float, b: float, strictly: bool = True) -> bool:
    """True when `a` is worse than `b` for `metric` (or no better, when not `strictly`)."""
    if HIGHER_IS_BETTER[metric]:
        return a < b if strictly else a <= b
    return a > b if strictly else a >= b


def test_the_original_scores_at_each_ideal(table):
    original = table["original"]
    for metric, ideal in IDEAL.items():
        assert original[metric] == pytest.approx(ideal, abs=0.01), metric


@pytest.mark.parametrize("metric", [*REFERENCE_METRICS, "dnsmos_overall", "dnsmos_background", "speaker_eer"])
def test_more_noise_is_never_better(table, metric):
    assert metric in table["original"], f"no {metric} in the calibration table (make install brings resemblyzer)"
    clean, mild, loud = (table[c][metric] for c in ("original", "noise_20db", "noise_0db"))
    assert _worse(metric, mild, clean, strictly=False), (metric, clean, mild)
    assert _worse(metric, loud, mild, strictly=False), (metric, mild, loud)
    if metric != "speaker_eer":  # the EER of the originals can itself be 0, and 0 dB noise need not move it
        assert _worse(metric, loud, clean), (metric, clean, loud)


def test_noise_lowers_the_predicted_signal_quality(table):
    assert table["noise_0db"]["dnsmos_signal"] < table["original"]["dnsmos_signal"]


@pytest.mark.parametrize("metric", ["mcd_dtw", "pesq", "stoi"])
def test_low_pass_filtering_costs_fidelity(table, metric):
    assert _worse(metric, table["lowpass_2khz"][metric], table["original"][metric]), metric


def test_low_pass_filtering_costs_no_more_pitch_than_unrelated_speech(table):
    assert table["lowpass_2khz"]["ffe"] < table["other_utterance"]["ffe"]
    assert table["lowpass_2khz"]["wer"] >= table["original"]["wer"]


@pytest.mark.parametrize("metric", REFERENCE_METRICS)
def test_a_different_utterance_is_worse_than_the_original(table, metric):
    assert _worse(metric, table["other_utterance"][metric], table["original"][metric]), metric


@pytest.mark.parametrize("metric", ["wer", "cer", "ffe", "gpe", "stoi", "speaker_eer"])
def test_a_different_utterance_is_worse_than_mild_noise(table, metric):
    assert metric in table["original"], f"no {metric} in the calibration table (make install brings resemblyzer)"
    assert _worse(metric, table["other_utterance"][metric], table["noise_20db"][metric]), metric
