"""DNSMOS through speechmos: offline, on the MOS scale, and lower for noisy speech."""

import socket

import numpy as np
import pytest

pytest.importorskip("speechmos")
pytest.importorskip("onnxruntime")

from unitvox.evaluation.naturalness import Dnsmos  # noqa: E402 (after the optional-dependency skips)

RATE = 16000


@pytest.fixture(scope="module")
def dnsmos():
    return Dnsmos()


def test_loads_and_scores_without_the_network(monkeypatch, corpus_utterances):
    def refuse(*args, **kwargs):
        raise AssertionError("DNSMOS tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    scores = Dnsmos().score(corpus_utterances(1, 1, seconds=3.0)[0].wave, RATE)
    assert 1.0 <= scores.overall <= 5.0


def test_scores_are_on_the_mos_scale_and_noise_lowers_them(dnsmos, corpus_utterances):
    wave = corpus_utterances(1, 1, seconds=4.0)[0].wave
    clean = dnsmos.score(wave, RATE)
    for value in (clean.overall, clean.signal, clean.background, clean.p808):
        assert 1.0 <= value <= 5.0
    rms = np.sqrt(np.mean(wave ** 2))
    noisy = dnsmos.score(wave + rms * np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32), RATE)
    assert noisy.background < clean.background - 0.5
    assert noisy.overall < clean.overall - 0.3


def test_short_audio_other_rates_and_loud_audio_are_handled(dnsmos, corpus_utterances):
    import soxr

    wave = corpus_utterances(1, 1, seconds=2.0)[0].wave
    at_16k = dnsmos.score(wave, RATE)
    at_8k = dnsmos.score(soxr.resample(wave, RATE, 8000).astype(np.float32), 8000)
    assert abs(at_8k.overall - at_16k.overall) < 1.0  # band-limited by the round trip, otherwise the same
    assert 1.0 <= dnsmos.score(wave * 4.0, RATE).overall <= 5.0  # clipped to [-1, 1], not refused
    with pytest.raises(ValueError, match="empty"):
        dnsmos.score(np.zeros(0, np.float32), RATE)
