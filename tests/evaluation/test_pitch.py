"""F0 tracking and the F0 errors of the speech-resynthesis paper (GPE, VDE, FFE, RMSE in cents)."""

import math

import numpy as np
import pytest

from unitvox.evaluation.pitch import F0Track, f0_errors, track_f0

RATE = 16000
HOP = 0.01


def _track(f0, voiced=None) -> F0Track:
    f0 = np.asarray(f0, dtype=float)
    voiced = f0 > 0 if voiced is None else np.asarray(voiced, dtype=bool)
    return F0Track(f0=np.where(voiced, f0, 0.0), voiced=voiced, hop_seconds=HOP)


def test_identical_tracks_have_no_error():
    track = _track([0, 100, 110, 120, 0, 200])
    errors = f0_errors(track, track)
    assert (errors.gpe, errors.vde, errors.ffe, errors.rmse_cents) == (0.0, 0.0, 0.0, 0.0)
    assert (errors.frames, errors.voiced_both) == (6, 4)


def test_errors_follow_the_published_definitions():
    # 10 frames: 2 unvoiced in both, 1 voicing miss, 1 voicing false alarm, 6 voiced in both, of which
    # one is an octave error (gross) and one is 10% off (not gross: the threshold is 20%).
    reference = _track([0, 0, 100, 0, 100, 100, 100, 100, 100, 100])
    estimate = _track([0, 0, 0, 150, 200, 110, 100, 100, 100, 100])
    errors = f0_errors(reference, estimate)
    assert errors.vde == pytest.approx(2 / 10)
    assert errors.gpe == pytest.approx(1 / 6)
    assert errors.ffe == pytest.approx(3 / 10)
    assert errors.rmse_cents == pytest.approx(math.sqrt((1200.0 ** 2 + (1200 * math.log2(1.1)) ** 2) / 6))


def test_a_twenty_percent_error_is_not_yet_gross():
    reference = _track([100.0, 100.0])
    assert f0_errors(reference, _track([119.9, 80.1])).gpe == 0.0
    assert f0_errors(reference, _track([120.1, 100.0])).gpe == 0.5


def test_length_mismatch_pads_the_shorter_with_unvoiced_frames():
    reference = _track([100, 100, 100, 100])
    errors = f0_errors(reference, _track([100, 100]))
    assert errors.frames == 4 and errors.vde == pytest.approx(0.5) and errors.gpe == 0.0
    assert f0_errors(_track([0, 0]), _track([0, 0, 0])).ffe == 0.0  # trailing silence costs nothing


def test_nothing_voiced_on_both_sides_gives_nan_gpe_but_a_full_ffe():
    errors = f0_errors(_track([100, 100]), _track([0, 0]))
    assert math.isnan(errors.gpe) and math.isnan(errors.rmse_cents)
    assert errors.ffe == errors.vde == 1.0
    empty = f0_errors(_track([]), _track([]))
    assert math.isnan(empty.ffe)


def test_tracks_with_different_hops_are_refused():
    with pytest.raises(ValueError, match="different hops"):
        f0_errors(_track([100]), F0Track(np.array([100.0]), np.array([True]), 0.005))
    with pytest.raises(ValueError, match="unknown pitch tracker 'crepe'"):
        track_f0(np.zeros(RATE, dtype=np.float32), RATE, tracker="crepe")


def test_pyin_finds_a_tone_and_not_silence():
    time = np.arange(int(0.6 * RATE)) / RATE
    tone = sum(0.3 / k * np.sin(2 * np.pi * 180.0 * k * time) for k in (1, 2, 3)).astype(np.float32)
    wave = np.concatenate([np.zeros(int(0.4 * RATE), np.float32), tone])
    track = track_f0(wave, RATE, hop_seconds=HOP)
    assert len(track) == pytest.approx(len(wave) / RATE / HOP, abs=2)
    silent, sounding = track.voiced[:30], track.voiced[50:-10]
    assert not silent.any()
    assert sounding.mean() > 0.9
    assert np.median(track.f0[50:-10][sounding]) == pytest.approx(180.0, rel=0.03)
    assert track_f0(np.zeros(100, np.float32), RATE).voiced.sum() == 0  # shorter than one window


def test_real_speech_is_partly_voiced_at_speaking_pitch(corpus_utterances):
    for utterance in corpus_utterances(2, 1, seconds=3.0):
        track = track_f0(utterance.wave, RATE)
        assert 0.2 < track.voiced.mean() < 0.95, utterance.name
        assert 60.0 < np.median(track.f0[track.voiced]) < 400.0, utterance.name
        assert f0_errors(track, track_f0(utterance.wave, RATE)).ffe == 0.0  # deterministic
