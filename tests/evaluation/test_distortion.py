"""Mel-cepstra (SPTK convention), MCD with DTW, PESQ wide-band and STOI."""

import math

import numpy as np
import pytest
import scipy.signal

from unitvox.evaluation.distortion import (
    MCD_ALPHA,
    mel_cepstral_distortion_dtw,
    mel_cepstrum,
    pesq_wideband,
    stoi,
)

RATE = 16000
FFT = 1024


def _warp(omega: np.ndarray, alpha: float) -> np.ndarray:
    """The frequency axis of a first-order all-pass: where linear frequency omega lands on the mel scale."""
    return omega + 2.0 * np.arctan(alpha * np.sin(omega) / (1.0 - alpha * np.cos(omega)))


def _resonant_noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """White noise through two resonances: a smooth spectral envelope that a low-order cepstrum can hold."""
    noise = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    b, a = scipy.signal.butter(2, [400, 900], btype="bandpass", fs=RATE)
    d, c = scipy.signal.butter(2, [2000, 2600], btype="bandpass", fs=RATE)
    return (scipy.signal.lfilter(b, a, noise) + 0.3 * scipy.signal.lfilter(d, c, noise) + 0.01 * noise).astype(
        np.float32)


def test_without_warping_it_is_the_plain_cepstrum_of_the_log_amplitude():
    wave = _resonant_noise()
    cepstra = mel_cepstrum(wave, RATE, order=30, alpha=0.0)
    frame = np.pad(wave.astype(np.float64), (FFT // 2, FFT // 2))[10 * 80: 10 * 80 + FFT] * np.blackman(FFT)
    log_amplitude = np.log(np.abs(np.fft.rfft(frame)))
    plain = np.fft.irfft(log_amplitude, n=FFT)
    assert cepstra[10, 0] == pytest.approx(plain[0], abs=1e-6)
    np.testing.assert_allclose(cepstra[10, 1:], 2.0 * plain[1:31], atol=1e-6)


def test_mel_cepstrum_holds_the_log_spectrum_on_a_warped_axis():
    # log|X(w)| ~ c0 + sum_m c_m cos(m * warp(w)): what a mel-cepstrum means in the SPTK convention.
    wave = _resonant_noise(seconds=2.0)
    cepstra = mel_cepstrum(wave, RATE, order=40, alpha=MCD_ALPHA)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wave.astype(np.float64), (FFT // 2,) * 2), FFT)[::80]
    log_amplitude = np.log(np.abs(np.fft.rfft(frames * np.blackman(FFT), axis=1)) + 1e-9).mean(axis=0)
    omega = np.linspace(0.0, np.pi, FFT // 2 + 1)
    rebuilt = (cepstra[:, :, None] * np.cos(np.arange(41)[:, None] * _warp(omega, MCD_ALPHA))[None]).sum(1).mean(0)
    assert np.median(np.abs(rebuilt - log_amplitude)) < 0.3  # nepers; the envelope spans about 6
    assert np.ptp(log_amplitude) > 4.0
    assert cepstra.shape == (len(frames), 41)


def test_mcd_is_zero_for_identical_audio_and_ignores_a_delay(corpus_utterances):
    wave = corpus_utterances(1, 1, seconds=3.0)[0].wave
    assert mel_cepstral_distortion_dtw(wave, wave, RATE) == pytest.approx(0.0, abs=1e-9)
    delayed = np.concatenate([np.zeros(int(0.05 * RATE), np.float32), wave])[: len(wave) + 400]
    rms = np.sqrt(np.mean(wave ** 2))
    noisy = wave + 0.3 * rms * np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32)
    assert mel_cepstral_distortion_dtw(wave, delayed, RATE) < 0.25 * mel_cepstral_distortion_dtw(wave, noisy, RATE)


def test_mcd_is_symmetric_and_grows_with_noise(corpus_utterances):
    wave = corpus_utterances(1, 1, seconds=2.0)[0].wave
    rms = np.sqrt(np.mean(wave ** 2))
    noise = rms * np.random.default_rng(1).standard_normal(len(wave)).astype(np.float32)
    mild, strong = wave + 0.1 * noise, wave + 1.0 * noise
    assert 0 < mel_cepstral_distortion_dtw(wave, mild, RATE) < mel_cepstral_distortion_dtw(wave, strong, RATE)
    assert mel_cepstral_distortion_dtw(wave, mild, RATE) == pytest.approx(
        mel_cepstral_distortion_dtw(mild, wave, RATE), rel=1e-6)


def test_pesq_and_stoi_are_at_their_ceiling_for_identical_audio(corpus_utterances):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    wave = corpus_utterances(1, 1, seconds=3.0)[0].wave
    assert pesq_wideband(wave, wave, RATE) == pytest.approx(4.64, abs=0.01)
    assert stoi(wave, wave, RATE) == pytest.approx(1.0, abs=1e-6)
    rms = np.sqrt(np.mean(wave ** 2))
    noisy = wave + rms * np.random.default_rng(2).standard_normal(len(wave)).astype(np.float32)
    assert pesq_wideband(wave, noisy, RATE) < 2.0
    assert stoi(wave, noisy, RATE) < 0.9
    longer = np.concatenate([wave, np.zeros(RATE // 2, np.float32)])
    assert stoi(wave, longer, RATE) == pytest.approx(1.0, abs=1e-6)  # cut to the shorter


def test_pesq_is_nan_without_speech_and_works_at_other_rates(corpus_utterances):
    pytest.importorskip("pesq")
    import soxr

    silence = np.zeros(RATE, np.float32)
    assert math.isnan(pesq_wideband(silence, silence, RATE))
    wave = corpus_utterances(1, 1, seconds=3.0)[0].wave
    at_22k = soxr.resample(wave, RATE, 22050).astype(np.float32)
    assert pesq_wideband(at_22k, at_22k, 22050) == pytest.approx(4.64, abs=0.01)
