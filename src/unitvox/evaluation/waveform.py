"""Reconstruction metrics between a reference waveform and a vocoder's estimate of it.

Pure numpy functions on mono float32 waveforms (16 kHz in this project). Every function that
compares waveforms takes `valid_samples`: batches are padded, and padding must never count, so
only the first `valid_samples` samples (of the shorter of the two waves) are compared.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import scipy.fft

_ENERGY_EPSILON = 1e-10  # keeps SNR finite for identical or silent signals
_LOG_FLOOR = 1e-10  # power floor before the log in mel cepstra (-100 dB)
_LEVEL_FLOOR_DB = -120.0
_MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)
_WINDOW_SECONDS = 0.025
_HOP_SECONDS = 0.010
_MEL_BANDS = 40


def snr_db(reference: np.ndarray, estimate: np.ndarray, valid_samples: int) -> float:
    """Signal-to-noise ratio of `estimate` against `reference`, in dB, over the valid part only.

    Computes 10 * log10(sum(ref^2) / sum((ref - est)^2)) over the first `valid_samples` samples
    that both waves have; a small epsilon keeps identical or silent signals finite.

    Args:
        reference: the original waveform, shape (T,).
        estimate: the reconstruction, shape (T',); may be longer or shorter than `reference`.
        valid_samples: how many leading samples hold real audio; the rest is padding.

    Raises:
        ValueError: a wave is not 1-D, or the valid range is empty.
    """
    reference, estimate = _valid_parts(reference, estimate, valid_samples, "snr_db")
    signal_energy = float(np.sum(reference**2))
    error_energy = float(np.sum((reference - estimate) ** 2))
    return 10.0 * math.log10((signal_energy + _ENERGY_EPSILON) / (error_energy + _ENERGY_EPSILON))


def mel_cepstral_distortion(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    valid_samples: int,
    *,
    n_cepstra: int = 13,
    silence_threshold_db: float | None = -60.0,
) -> float:
    """Mel cepstral distortion (MCD) in dB between the valid parts of two waveforms.

    Cepstra are MFCC-like: the orthonormal DCT of the natural log of a 40-band mel amplitude
    spectrum (25 ms windows, 10 ms hop, no centre padding so that every frame lies inside the
    valid part), coefficients 1..`n_cepstra` (c0, the loudness, is left out). Per frame,
    MCD = (10 / ln 10) * sqrt(2 * sum(diff^2)); the result is the mean over frames. Values are
    comparable between runs of this tool, not with papers that use SPTK mel-generalised cepstra.

    Frames are paired by index, without dynamic time warping: a vocoder reconstruction keeps the
    reference's timing, so frame i of one is frame i of the other.

    Frames where the reference is silent (RMS below `silence_threshold_db` dBFS) are left out,
    because the log spectrum of near-silence is mostly noise floor and would otherwise dominate
    the average of an utterance with long pauses. When every frame is silent, all are kept.

    Args:
        reference: the original waveform, shape (T,).
        estimate: the reconstruction, shape (T',).
        sample_rate: rate of both waves in Hz; sets window and hop lengths.
        valid_samples: how many leading samples hold real audio; the rest is padding.
        n_cepstra: cepstral coefficients compared, not counting c0.
        silence_threshold_db: frame RMS level below which reference frames are skipped; None keeps all.

    Raises:
        ValueError: a wave is not 1-D, or the valid part is shorter than one 25 ms window.
    """
    reference, estimate = _valid_parts(reference, estimate, valid_samples, "mel_cepstral_distortion")
    window = int(round(_WINDOW_SECONDS * sample_rate))
    hop = int(round(_HOP_SECONDS * sample_rate))
    if len(reference) < window:
        raise ValueError(
            f"mel_cepstral_distortion: the valid part has {len(reference)} samples, "
            f"fewer than one {window}-sample (25 ms) analysis window"
        )
    difference = _mel_cepstra(reference, sample_rate, window, hop, n_cepstra) - _mel_cepstra(
        estimate, sample_rate, window, hop, n_cepstra
    )
    frame_distortion = _MCD_CONSTANT * np.sqrt(np.sum(difference**2, axis=0))
    if silence_threshold_db is not None:
        loud = _frame_levels_db(reference, window, hop) >= silence_threshold_db
        if loud.any():
            frame_distortion = frame_distortion[loud]
    return float(np.mean(frame_distortion))


def length_ratio(reference_samples: int, estimate_samples: int) -> float:
    """How long the estimate is relative to the reference: `estimate_samples / reference_samples`.

    Raises:
        ValueError: `reference_samples` is not positive or `estimate_samples` is negative.
    """
    if reference_samples <= 0:
        raise ValueError(f"length_ratio: reference_samples must be positive, got {reference_samples}")
    if estimate_samples < 0:
        raise ValueError(f"length_ratio: estimate_samples must not be negative, got {estimate_samples}")
    return estimate_samples / reference_samples


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors of the same shape, in [-1, 1].

    Raises:
        ValueError: the shapes differ, or either vector is all zeros.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine_similarity: shapes differ, {a.shape} and {b.shape}")
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        raise ValueError("cosine_similarity: a zero vector has no direction")
    return float(np.clip(np.dot(a, b) / norms, -1.0, 1.0))


def level_summary(wave: np.ndarray, valid_samples: int) -> dict[str, float]:
    """Peak and RMS level of the valid part of a wave in dBFS (floored at -120 dB).

    Useful beside a negative SNR: it tells a silent, clipped or wrongly scaled output apart.

    Returns:
        {"peak_dbfs": ..., "rms_dbfs": ...}

    Raises:
        ValueError: the wave is not 1-D, or the valid range is empty.
    """
    wave, _ = _valid_parts(wave, wave, valid_samples, "level_summary")
    peak = float(np.max(np.abs(wave)))
    rms = math.sqrt(float(np.mean(wave**2)))
    return {"peak_dbfs": _to_dbfs(peak), "rms_dbfs": _to_dbfs(rms)}


def _valid_parts(
    reference: np.ndarray, estimate: np.ndarray, valid_samples: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both waves cut to the valid length they share, as float64 (sums of squares lose precision in float32)."""
    for name, wave in (("reference", reference), ("estimate", estimate)):
        if np.ndim(wave) != 1:
            raise ValueError(f"{metric}: {name} must be a mono wave of shape (T,), got shape {np.shape(wave)}")
    length = min(len(reference), len(estimate), int(valid_samples))
    if length <= 0:
        raise ValueError(
            f"{metric}: empty valid range (valid_samples={valid_samples}, reference has "
            f"{len(reference)} samples, estimate has {len(estimate)})"
        )
    return (
        np.asarray(reference[:length], dtype=np.float64),
        np.asarray(estimate[:length], dtype=np.float64),
    )


def _mel_cepstra(wave: np.ndarray, sample_rate: int, window: int, hop: int, n_cepstra: int) -> np.ndarray:
    """Cepstral coefficients 1..n_cepstra of every frame, shape (n_cepstra, frames)."""
    mel_power = librosa.feature.melspectrogram(
        y=wave, sr=sample_rate, n_fft=window, hop_length=hop, center=False, power=2.0, n_mels=_MEL_BANDS
    )
    log_amplitude = 0.5 * np.log(np.maximum(mel_power, _LOG_FLOOR))
    return scipy.fft.dct(log_amplitude, type=2, norm="ortho", axis=0)[1 : n_cepstra + 1]


def _frame_levels_db(wave: np.ndarray, window: int, hop: int) -> np.ndarray:
    """RMS level of each analysis frame in dBFS, framed exactly like `_mel_cepstra`, shape (frames,)."""
    frames = librosa.util.frame(wave, frame_length=window, hop_length=hop)
    return 10.0 * np.log10(np.maximum(np.mean(frames**2, axis=0), _ENERGY_EPSILON))


def _to_dbfs(amplitude: float) -> float:
    if amplitude <= 0.0:
        return _LEVEL_FLOOR_DB
    return max(20.0 * math.log10(amplitude), _LEVEL_FLOOR_DB)
