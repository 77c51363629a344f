"""Standard distortions against the original: MCD with DTW on mel-cepstra, PESQ wide-band, STOI.

    mel_cepstral_distortion_dtw(original, resynthesis, 16000)  # dB, 0 is identical, lower is better
    pesq_wideband(original, resynthesis, 16000)                # MOS-LQO, -0.5 to 4.64, higher is better
    stoi(original, resynthesis, 16000)                         # 0 to 1, higher is better

MCD is the one the unit-vocoder papers report (unit-HiFiGAN, speech-resynthesis): mel-cepstra in the
SPTK convention (log amplitude spectrum on a mel-warped frequency axis, all-pass constant alpha),
the energy coefficient c0 left out, frames paired by dynamic time warping, and per pair
(10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2), averaged over the warping path. Resynthesis that is a
little faster or slower is therefore not penalised for its timing, only for its spectra.

The mel-cepstrum is computed here (no pysptk, whose import needs setuptools' removed pkg_resources):
the real cepstrum of each frame's power spectrum, warped to the mel scale by SPTK's `freqt` recursion
(Oppenheim's frequency transformation), written as one matrix per (FFT size, order, alpha).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import soxr

MCD_ORDER = 24        # mel-cepstral coefficients c1..c24 (SPTK order 24); c0 is left out of the distance
MCD_ALPHA = 0.42      # all-pass constant that approximates the mel scale at 16 kHz (0.41 in SPTK's table)
MCD_FFT = 1024        # 64 ms Blackman window at 16 kHz
MCD_HOP_SECONDS = 0.005
_MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
_POWER_FLOOR = 1e-10  # digital silence has a finite log spectrum
PESQ_RATE = 16000     # PESQ wide-band (ITU-T P.862.2) is defined at 16 kHz


def mel_cepstrum(wave: np.ndarray, sample_rate: int, *, order: int = MCD_ORDER, alpha: float = MCD_ALPHA,
                 fft_size: int = MCD_FFT, hop_seconds: float = MCD_HOP_SECONDS) -> np.ndarray:
    """Mel-cepstra of `wave` (T,) float32: shape (frames, order + 1), c0 first.

    Frames are centred (padded by half a window at both ends), Blackman-windowed, one per hop.
    """
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    hop = max(1, int(round(hop_seconds * sample_rate)))
    padded = np.pad(wave, (fft_size // 2, fft_size // 2))
    if len(padded) < fft_size:
        padded = np.pad(padded, (0, fft_size - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, fft_size)[::hop] * np.blackman(fft_size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    cepstrum = np.fft.irfft(np.log(np.maximum(power, _POWER_FLOOR)), n=fft_size, axis=1)[:, : fft_size // 2 + 1]
    # The cepstrum of the log power is twice that of the log amplitude, except at quefrency 0 (and the
    # Nyquist bin): halving those two gives SPTK's convention, log|H(w)| = c0 + sum_m c_m cos(m w).
    cepstrum[:, 0] /= 2.0
    cepstrum[:, -1] /= 2.0
    return cepstrum @ _warping_matrix(fft_size // 2, order, alpha)


@functools.lru_cache(maxsize=8)
def _warping_matrix(input_order: int, output_order: int, alpha: float) -> np.ndarray:
    """freqt as a matrix, shape (input_order + 1, output_order + 1): row i is the warped unit cepstrum e_i.

    SPTK's recursion feeds the input coefficients from the highest down to c0 through a chain of
    first-order all-pass sections; it is linear, so running it on every unit vector at once gives the
    matrix that maps a plain cepstrum to a mel-cepstrum.
    """
    beta = 1.0 - alpha * alpha
    identity = np.eye(input_order + 1)
    warped = np.zeros((input_order + 1, output_order + 1))
    for i in range(input_order, -1, -1):
        previous = warped.copy()
        warped[:, 0] = identity[:, i] + alpha * previous[:, 0]
        if output_order >= 1:
            warped[:, 1] = beta * previous[:, 0] + alpha * previous[:, 1]
        for j in range(2, output_order + 1):
            warped[:, j] = previous[:, j - 1] + alpha * (previous[:, j] - warped[:, j - 1])
    return warped


def mel_cepstral_distortion_dtw(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, *,
                                order: int = MCD_ORDER, alpha: float = MCD_ALPHA) -> float:
    """MCD in dB between two waves (T,), frames aligned by DTW; 0 for identical audio, lower is better.

    Memory grows with the product of the two frame counts (8 bytes each, 200 frames a second): about
    30 MB for two 10 s utterances.
    """
    import librosa
    from scipy.spatial.distance import cdist

    ref = mel_cepstrum(reference, sample_rate, order=order, alpha=alpha)[:, 1:]
    est = mel_cepstrum(estimate, sample_rate, order=order, alpha=alpha)[:, 1:]
    cost = cdist(ref, est)  # Euclidean distance of every frame pair
    _, path = librosa.sequence.dtw(C=cost, backtrack=True)
    return float(_MCD_SCALE * cost[path[:, 0], path[:, 1]].mean())


def pesq_wideband(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """PESQ wide-band MOS-LQO (`pesq`, ITU-T P.862.2) of `estimate` against `reference`, higher is better.

    4.64 is identical audio. Both are resampled to 16 kHz and cut to the shorter; PESQ aligns them in
    time itself. NaN when PESQ finds no speech in the reference (silence, or too short).
    """
    from pesq import PesqError, pesq

    reference, estimate = _common(reference, estimate, sample_rate, PESQ_RATE)
    if not np.any(reference) or not np.any(estimate):  # pesq scales by the peak: digital silence divides by 0
        return math.nan
    try:
        return float(pesq(PESQ_RATE, reference, estimate, "wb"))
    except PesqError:
        return math.nan


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, *, extended: bool = False) -> float:
    """Short-time objective intelligibility (`pystoi`; Taal et al. 2011) of `estimate`, higher is better.

    About 1 for identical audio, near 0 for unrelated speech. The two are cut to the shorter (STOI
    compares frame by frame, so it expects time-aligned audio); `extended` gives ESTOI.
    """
    from pystoi import stoi as compute_stoi

    reference, estimate = _common(reference, estimate, sample_rate, sample_rate)
    return float(compute_stoi(reference, estimate, sample_rate, extended=extended))


def _common(reference: np.ndarray, estimate: np.ndarray, rate: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    waves = []
    for wave in (reference, estimate):
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        waves.append(wave if rate == target else soxr.resample(wave, rate, target))
    length = min(len(waves[0]), len(waves[1]))
    return waves[0][:length].astype(np.float64), waves[1][:length].astype(np.float64)
