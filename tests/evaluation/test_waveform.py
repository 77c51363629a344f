"""Reconstruction metrics on generated speech-like signals with known distortions."""

import math

import numpy as np
import pytest

from synth import speech_like
from unitvox.evaluation.waveform import (
    cosine_similarity,
    length_ratio,
    level_summary,
    mel_cepstral_distortion,
    snr_db,
)

RATE = 16000


def noise_at_snr(signal: np.ndarray, snr: float, seed: int = 1) -> np.ndarray:
    """White noise scaled so that energy(signal) / energy(noise) is exactly `snr` dB."""
    noise = np.random.default_rng(seed).standard_normal(len(signal))
    scale = math.sqrt(np.sum(signal.astype(np.float64) ** 2) / (np.sum(noise**2) * 10 ** (snr / 10)))
    return (noise * scale).astype(np.float32)


def test_snr_of_identical_signals_is_very_high():
    reference = speech_like(1.0)
    assert snr_db(reference, reference.copy(), len(reference)) > 100.0


@pytest.mark.parametrize("target", [-5.0, 0.0, 12.0, 30.0])
def test_snr_matches_the_snr_of_added_noise(target):
    reference = speech_like(2.0)
    estimate = reference + noise_at_snr(reference, target)
    assert snr_db(reference, estimate, len(reference)) == pytest.approx(target, abs=0.1)


def test_snr_ignores_padding_past_the_valid_samples():
    valid = speech_like(1.0)
    padding = int(0.5 * RATE)
    reference = np.concatenate([valid, np.zeros(padding, np.float32)])
    garbage = 0.5 * np.random.default_rng(7).standard_normal(padding).astype(np.float32)
    estimate = np.concatenate([valid + noise_at_snr(valid, 15.0), garbage])

    on_valid_part = snr_db(reference, estimate, len(valid))
    on_padded_length = snr_db(reference, estimate, len(reference))

    assert on_valid_part == pytest.approx(15.0, abs=0.1)
    assert on_padded_length < on_valid_part - 10.0, "the garbage in the padding must not leak into the valid SNR"


def test_snr_uses_the_length_both_waves_share():
    reference = speech_like(1.0)
    estimate = reference[: RATE // 2] + noise_at_snr(reference[: RATE // 2], 20.0)
    assert snr_db(reference, estimate, len(reference)) == pytest.approx(20.0, abs=0.1)


@pytest.mark.parametrize("valid_samples", [0, -3])
def test_snr_refuses_an_empty_valid_range(valid_samples):
    reference = speech_like(0.5)
    with pytest.raises(ValueError, match="empty valid range"):
        snr_db(reference, reference, valid_samples)


def test_snr_refuses_a_multichannel_wave():
    stereo = np.zeros((100, 2), np.float32)
    with pytest.raises(ValueError, match=r"reference must be a mono wave of shape \(T,\)"):
        snr_db(stereo, stereo, 100)


def test_mcd_of_identical_signals_is_zero():
    reference = speech_like(1.0)
    assert mel_cepstral_distortion(reference, reference.copy(), RATE, len(reference)) == pytest.approx(0.0, abs=1e-9)


def test_mcd_grows_with_the_noise_level():
    reference = speech_like(2.0)
    mild = mel_cepstral_distortion(reference, reference + noise_at_snr(reference, 25.0), RATE, len(reference))
    strong = mel_cepstral_distortion(reference, reference + noise_at_snr(reference, 5.0), RATE, len(reference))
    assert 0.0 < mild < strong
    assert strong - mild > 1.0, f"a 20 dB noise difference should move MCD clearly ({mild:.2f} vs {strong:.2f})"


def test_mcd_ignores_padding_past_the_valid_samples():
    valid = speech_like(1.0)
    noisy = valid + noise_at_snr(valid, 15.0)
    garbage = np.random.default_rng(3).standard_normal(RATE // 2).astype(np.float32)
    reference = np.concatenate([valid, speech_like(0.5, seed=2)])
    estimate = np.concatenate([noisy, garbage])
    expected = mel_cepstral_distortion(valid, noisy, RATE, len(valid))
    assert mel_cepstral_distortion(reference, estimate, RATE, len(valid)) == pytest.approx(expected)
    assert mel_cepstral_distortion(reference, estimate, RATE, len(reference)) > expected + 1.0


def test_mcd_leaves_out_silent_reference_frames():
    speech = speech_like(1.0)
    silence = np.zeros(RATE, np.float32)
    reference = np.concatenate([speech, silence])
    hiss = 1e-3 * np.random.default_rng(5).standard_normal(RATE).astype(np.float32)  # -60 dBFS, loud against zeros
    estimate = np.concatenate([speech, hiss])
    with_silence = mel_cepstral_distortion(reference, estimate, RATE, len(reference), silence_threshold_db=None)
    without_silence = mel_cepstral_distortion(reference, estimate, RATE, len(reference))
    assert without_silence < 0.5 < with_silence


def test_mcd_refuses_a_valid_part_shorter_than_one_window():
    reference = speech_like(0.1)
    with pytest.raises(ValueError, match="fewer than one 400-sample"):
        mel_cepstral_distortion(reference, reference, RATE, 399)


def test_length_ratio():
    assert length_ratio(16000, 8000) == 0.5
    assert length_ratio(16000, 16000) == 1.0
    with pytest.raises(ValueError, match="reference_samples must be positive"):
        length_ratio(0, 100)


def test_cosine_similarity():
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(0.0)
    assert cosine_similarity(np.array([1.0, -1.0]), np.array([-1.0, 1.0])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="zero vector"):
        cosine_similarity(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="shapes differ"):
        cosine_similarity(np.ones(3), np.ones(4))


def test_level_summary_of_a_sine_ignores_padding():
    sine = 0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE).astype(np.float32)
    padded = np.concatenate([sine, np.ones(1000, np.float32)])
    levels = level_summary(padded, len(sine))
    assert levels["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert levels["rms_dbfs"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)


def test_level_summary_of_silence_is_floored():
    assert level_summary(np.zeros(100, np.float32), 100) == {"peak_dbfs": -120.0, "rms_dbfs": -120.0}
