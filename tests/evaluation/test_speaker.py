"""Speaker embedders: the model-free fallback everywhere, resemblyzer on real speech when installed."""

import sys

import numpy as np
import pytest
import soundfile

from synth import speech_like
from unitvox.evaluation.waveform import cosine_similarity
from unitvox.evaluation.speaker import (
    SilentInputError,
    build_speaker_embedder,
    speaker_similarity,
)

RATE = 16000


@pytest.fixture(scope="module")
def corpus_speech(speech_corpus):
    """Reads the first seconds of a reader's utterance, (T,) float32 at 16 kHz; readers by sorted position.

    On librispeech-mini readers 0 and 2 are 1688 and 2033, both male; the synthetic fallback
    corpus alternates male and female voices, so 0 and 2 are male there too.
    """
    import soxr

    readers = sorted(folder for folder in speech_corpus.iterdir() if folder.is_dir())

    def read(reader: int, index: int, seconds: float = 3.0) -> np.ndarray:
        path = sorted(p for p in readers[reader].iterdir() if p.suffix in (".flac", ".wav"))[index]
        wave, rate = soundfile.read(path, dtype="float32")
        wave = soxr.resample(wave, rate, RATE).astype(np.float32) if rate != RATE else wave
        return wave[: int(seconds * RATE)]

    return read


@pytest.fixture(scope="module")
def resemblyzer_embedder():
    pytest.importorskip("resemblyzer")
    torch = pytest.importorskip("torch")
    # A small LSTM gains nothing from intra-op threads, and on a busy 2-core machine OpenMP
    # contention stalls single calls for seconds; restored so other test modules are unaffected.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_speaker_embedder("resemblyzer", device="cpu")
    torch.set_num_threads(threads)


def test_mfcc_stats_returns_unit_norm_vectors():
    embedder = build_speaker_embedder("mfcc_stats")
    embedding = embedder.embed(speech_like(1.0), RATE)
    assert embedding.shape == (38,) and embedding.dtype == np.float32
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(embedding, embedder.embed(speech_like(1.0), RATE)), "deterministic"


def test_mfcc_stats_resamples_other_rates():
    embedder = build_speaker_embedder("mfcc_stats", n_mfcc=12)
    at_16k = embedder.embed(speech_like(1.0, rate=16000), 16000)
    at_48k = embedder.embed(speech_like(1.0, rate=48000), 48000)
    assert at_48k.shape == (24,)
    assert cosine_similarity(at_16k, at_48k) > 0.99


def test_silent_or_broken_input_is_refused():
    embedder = build_speaker_embedder("mfcc_stats")
    with pytest.raises(SilentInputError, match="silent"):
        embedder.embed(np.zeros(RATE, np.float32), RATE)
    with pytest.raises(ValueError, match="NaN or infinite"):
        embedder.embed(np.full(RATE, np.nan, np.float32), RATE)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        embedder.embed(np.zeros((RATE, 2), np.float32), RATE)


def test_speaker_similarity_is_nan_for_a_silent_estimate():
    embedder = build_speaker_embedder("mfcc_stats")
    speech = speech_like(1.0)
    assert speaker_similarity(embedder, speech, speech, RATE) == pytest.approx(1.0)
    assert np.isnan(speaker_similarity(embedder, speech, np.zeros_like(speech), RATE))


def test_unknown_embedder_names_the_choices():
    choices = r"choose one of \['mfcc_stats', 'resemblyzer'\]"
    with pytest.raises(ValueError, match=rf"unknown speaker embedder 'ecapa'; {choices}"):
        build_speaker_embedder("ecapa")


def test_missing_resemblyzer_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # makes `import resemblyzer` raise ImportError
    with pytest.raises(ImportError, match="pip install --no-deps resemblyzer webrtcvad-wheels"):
        build_speaker_embedder("resemblyzer")


def test_resemblyzer_tells_same_speaker_from_different_speaker(resemblyzer_embedder, corpus_speech):
    # Two male readers, so the test cannot pass on voice pitch range alone.
    first, second = (resemblyzer_embedder.embed(corpus_speech(0, index), RATE) for index in (0, 1))
    other = resemblyzer_embedder.embed(corpus_speech(2, 0), RATE)
    for embedding in (first, second, other):
        assert embedding.shape == (256,)
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    same = cosine_similarity(first, second)
    different = max(cosine_similarity(first, other), cosine_similarity(second, other))
    assert same > different + 0.1, f"same speaker {same:.3f}, different speakers {different:.3f}"


@pytest.mark.parametrize("seconds", [1.0, 1.5])
def test_resemblyzer_embeds_short_clips(resemblyzer_embedder, corpus_speech, seconds):
    clip = corpus_speech(1, 0, seconds)
    embedding = resemblyzer_embedder.embed(clip, RATE)
    assert np.all(np.isfinite(embedding))
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)


def test_resemblyzer_embeds_audio_its_vad_drops_entirely(resemblyzer_embedder):
    # WebRTC VAD keeps nothing of a steady tone; embedding the empty remainder would give every
    # such input the same vector (that of zero padding), so different tones must differ.
    low, high = ((0.3 * np.sin(2 * np.pi * pitch * np.arange(RATE) / RATE)).astype(np.float32) for pitch in (150, 5000))
    low_embedding, high_embedding = resemblyzer_embedder.embed(low, RATE), resemblyzer_embedder.embed(high, RATE)
    assert np.linalg.norm(low_embedding) == pytest.approx(1.0, abs=1e-5)
    assert cosine_similarity(low_embedding, high_embedding) < 0.99
