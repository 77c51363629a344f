"""Scoring an utterance with independent listeners: the resynthesis's row and the original's ceiling."""

import math

import numpy as np
import pytest

from unitvox.evaluation.scoring import (
    REFERENCE_ASR_OF_ORIGINAL,
    REFERENCE_TRANSCRIPT,
    ListenerSettings,
    Listeners,
    choose_asr_engine,
)

RATE = 16000


def test_auto_picks_pocketsphinx_for_english_and_turns_asr_off_for_other_languages():
    assert choose_asr_engine(ListenerSettings(language="en-GB"))[0] == "pocketsphinx"
    engine, note = choose_asr_engine(ListenerSettings(language="fr"))
    assert engine is None and "'fr'" in note and "evaluate.asr.model" in note
    assert choose_asr_engine(ListenerSettings(asr_engine="none"))[0] is None
    assert choose_asr_engine(ListenerSettings(asr_engine="transformers", asr_model="m"))[0] == "transformers"


@pytest.fixture(scope="module")
def listeners():
    for package in ("pocketsphinx", "speechmos", "pesq", "pystoi"):
        pytest.importorskip(package)
    return Listeners(ListenerSettings())


def test_the_original_is_the_ceiling_and_noise_costs(listeners, corpus_utterances):
    wave = corpus_utterances(1, 1, seconds=3.0)[0].wave
    noisy = wave + np.sqrt(np.mean(wave ** 2)) * np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32)
    scored = listeners.score(wave, noisy, RATE)
    assert scored.texts["reference_source"] == REFERENCE_ASR_OF_ORIGINAL
    assert scored.texts["reference"] == scored.texts["heard_original"]
    assert scored.original["wer"] == 0.0 and scored.original["ffe"] == 0.0 and scored.original["mcd_dtw"] == 0.0
    assert scored.original["pesq"] == pytest.approx(4.64) and scored.original["stoi"] == 1.0
    assert scored.resynthesis["wer"] > 0 and scored.resynthesis["ffe"] > 0 and scored.resynthesis["mcd_dtw"] > 0
    assert scored.resynthesis["dnsmos_overall"] < scored.original["dnsmos_overall"]
    for row in (scored.original, scored.resynthesis):
        assert set(row) >= {"wer", "cer", "gpe", "vde", "ffe", "f0_rmse_cents", "dnsmos_overall", "dnsmos_signal",
                            "dnsmos_background", "mcd_dtw", "pesq", "stoi"}


def test_a_reference_transcript_scores_the_original_too(listeners, corpus_utterances):
    wave = corpus_utterances(1, 1, seconds=3.0)[0].wave
    scored = listeners.score(wave, wave, RATE, reference_text="Words nobody said at all, in capitals.")
    assert scored.texts["reference_source"] == REFERENCE_TRANSCRIPT
    assert scored.original["wer"] > 0.5 and scored.original["wer"] == scored.resynthesis["wer"]


def test_without_asr_there_is_a_note_and_no_wer():
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    listeners = Listeners(ListenerSettings(language="fr", dnsmos=False))
    time = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 150 * time)).astype(np.float32)
    scored = listeners.score(tone, tone, RATE)
    assert "wer" not in scored.resynthesis and "'fr'" in scored.texts["asr_note"]
    assert scored.resynthesis["ffe"] == 0.0 and "dnsmos_overall" not in scored.original
    silent = listeners.score(np.zeros(RATE, np.float32), np.zeros(RATE, np.float32), RATE)
    assert math.isnan(silent.original["gpe"]) and silent.original["ffe"] == 0.0
