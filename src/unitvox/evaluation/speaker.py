"""Speaker embedders behind a registry: `resemblyzer` (a pretrained encoder) and `mfcc_stats` (model-free).

Speaker similarity between a reference and its reconstruction is the cosine of their embeddings;
`speaker_similarity` computes it and gives NaN for silent audio, which a quality gate then fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import librosa
import numpy as np
import soxr

from unitvox.evaluation.waveform import cosine_similarity
from unitvox.registry import Requirement, registrar

RESEMBLYZER_INSTALL = ".venv/bin/pip install --no-deps resemblyzer webrtcvad-wheels"
_SILENT_PEAK = 1e-5  # -100 dBFS: nothing a speaker encoder could use
_MFCC_RATE = 16_000


class SilentInputError(ValueError):
    """A wave with no audible sample: it carries no speaker to embed."""


class SpeakerEmbedder(Protocol):
    """Maps an utterance to a vector that is close for the same voice and far for different ones."""

    name: str

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embed one utterance: wave (T,) float32 mono at `sample_rate` -> (D,) float32 of unit L2 norm.

        Raises:
            ValueError: the wave is not 1-D, empty or not finite.
            SilentInputError: the wave is silent.
        """


SPEAKER_EMBEDDERS: dict[str, Callable[..., SpeakerEmbedder]] = {}


register_speaker_embedder = registrar(SPEAKER_EMBEDDERS)


def build_speaker_embedder(name: str, **options: Any) -> SpeakerEmbedder:
    """The embedder registered as `name`, built with `options` (e.g. `device="cpu"`).

    Raises:
        ValueError: no embedder has that name.
        ImportError: the embedder needs a package that is not installed (the message says how to install it).
    """
    if name not in SPEAKER_EMBEDDERS:
        raise ValueError(f"unknown speaker embedder {name!r}; choose one of {sorted(SPEAKER_EMBEDDERS)}")
    return SPEAKER_EMBEDDERS[name](**options)


def speaker_similarity(
    embedder: SpeakerEmbedder, reference: np.ndarray, estimate: np.ndarray, sample_rate: int
) -> float:
    """Cosine similarity of the speaker embeddings of two waves (T,), or NaN when either is silent.

    NaN rather than an exception, because a silent reconstruction is a result to report (and
    to fail a gate on), not a reason to stop evaluating the other utterances.
    """
    try:
        return cosine_similarity(embedder.embed(reference, sample_rate), embedder.embed(estimate, sample_rate))
    except SilentInputError:
        return float("nan")


@register_speaker_embedder("resemblyzer")
class ResemblyzerEmbedder:
    """Resemblyzer's pretrained GE2E voice encoder (256 dimensions); the weights ship inside its wheel.

    Input is resampled to 16 kHz, raised to -30 dBFS when quieter, and has long silences trimmed
    by WebRTC VAD, as `resemblyzer.preprocess_wav` does. Short or unusual audio can lose almost
    everything to the VAD (a 1 s clip may keep half, a synthetic tone nothing), so when fewer than
    `min_voiced_seconds` survive the trimming, the untrimmed wave is embedded instead.

    Args:
        device: torch device for the encoder ("cpu", "cuda").
        min_voiced_seconds: shortest VAD-trimmed audio that is used as it is.
    """

    name = "resemblyzer"
    requires = (Requirement("resemblyzer", RESEMBLYZER_INSTALL), Requirement("webrtcvad", RESEMBLYZER_INSTALL))

    def __init__(self, device: str = "cpu", min_voiced_seconds: float = 0.5):
        self._resemblyzer = _import_resemblyzer()
        # The encoder loads its bundled weights with torch.load's default, weights_only=True on torch >= 2.6.
        self._encoder = self._resemblyzer.VoiceEncoder(device=device, verbose=False)
        self._rate = int(self._resemblyzer.sampling_rate)
        self._min_voiced_samples = int(min_voiced_seconds * self._rate)

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """wave (T,) float32 at `sample_rate` -> (256,) float32, unit norm and non-negative."""
        wave = _resampled(_checked_wave(wave, self.name), sample_rate, self._rate)
        audio = self._resemblyzer.audio
        louder = audio.normalize_volume(wave, audio.audio_norm_target_dBFS, increase_only=True)
        trimmed = audio.trim_long_silences(louder)
        chosen = trimmed if len(trimmed) >= self._min_voiced_samples else louder
        embedding = self._encoder.embed_utterance(chosen.astype(np.float32))
        if not np.all(np.isfinite(embedding)):
            # The encoder's final ReLU can zero every unit; normalising that yields NaN.
            raise SilentInputError("resemblyzer: the encoder produced no activation for this audio")
        return embedding.astype(np.float32)


@register_speaker_embedder("mfcc_stats")
class MfccStatsEmbedder:
    """Mean and standard deviation of MFCCs 1..n_mfcc over the utterance, scaled to unit norm.

    A weak, model-free stand-in for tests and machines without resemblyzer: it follows the
    spectral envelope, so it separates very different voices, but content, channel and
    loudness move it as much as the speaker does. Do not gate releases on it.

    Args:
        n_mfcc: MFCCs kept after dropping c0 (loudness); the embedding has 2 * n_mfcc dimensions.
    """

    name = "mfcc_stats"

    def __init__(self, n_mfcc: int = 19):
        self.n_mfcc = n_mfcc

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """wave (T,) float32 at `sample_rate` -> (2 * n_mfcc,) float32 of unit norm."""
        wave = _resampled(_checked_wave(wave, self.name), sample_rate, _MFCC_RATE)
        # 25 ms windows, 10 ms hop, as in the MCD metric.
        mfcc = librosa.feature.mfcc(y=wave, sr=_MFCC_RATE, n_mfcc=self.n_mfcc + 1, n_fft=400, hop_length=160)[1:]
        statistics = np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float64)
        norm = float(np.linalg.norm(statistics))
        if norm == 0.0:
            raise SilentInputError("mfcc_stats: the MFCC statistics are all zero")
        return (statistics / norm).astype(np.float32)


def _import_resemblyzer():
    """The resemblyzer module, imported on first use so that the package stays optional."""
    try:
        with warnings.catch_warnings():
            # resemblyzer 0.1.4 imports binary_dilation from scipy.ndimage.morphology, deprecated since SciPy 1.8.
            warnings.simplefilter("ignore", DeprecationWarning)
            import resemblyzer
    except ImportError as error:
        raise ImportError(
            f"speaker embedder 'resemblyzer' needs the resemblyzer and webrtcvad-wheels packages ({error}); "
            f"install them with: {RESEMBLYZER_INSTALL}   (--no-deps: resemblyzer asks for the source-only "
            "'webrtcvad' and the obsolete 'typing' backport; torch, librosa and scipy are already here). "
            "Or use speaker embedder 'mfcc_stats', a weak model-free fallback."
        ) from error
    return resemblyzer


def _checked_wave(wave: np.ndarray, embedder: str) -> np.ndarray:
    """The wave as float32 (T,), refused with a clear message when it cannot be embedded."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"{embedder}: expected a non-empty mono wave of shape (T,), got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{embedder}: the wave holds NaN or infinite samples")
    if float(np.max(np.abs(wave))) < _SILENT_PEAK:
        raise SilentInputError(f"{embedder}: the wave is silent (peak below -100 dBFS), there is no voice to embed")
    return wave


def _resampled(wave: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    if sample_rate == target_rate:
        return wave
    return soxr.resample(wave, sample_rate, target_rate, quality="HQ").astype(np.float32)
