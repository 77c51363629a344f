"""Pitch: F0 tracks of original and resynthesis, and the F0 errors the unit-vocoder papers report.

    reference, estimate = track_f0(original, 16000), track_f0(resynthesis, 16000)
    errors = f0_errors(reference, estimate)   # errors.gpe, errors.vde, errors.ffe, errors.rmse_cents

Definitions follow Polyak et al., "Speech Resynthesis from Discrete Disentangled Self-Supervised
Representations" (Interspeech 2021), after Chu and Alwan (2009), over N frames compared:

- VDE (voicing decision error): share of the N frames where one side is voiced and the other is not.
- GPE (gross pitch error): among frames voiced on both sides, share whose F0 differs by more than 20%
  of the reference F0.
- FFE (F0 frame error): share of the N frames with a voicing error or a gross pitch error.
- F0 RMSE in cents over frames voiced on both sides (1200 log2 of the F0 ratio; 100 cents = a semitone).

All four are 0 for a perfect match. Both tracks use the same hop; when their lengths differ (a
resynthesis a few frames short or long) the shorter is padded with unvoiced frames, so frames only one
side has count as voicing errors rather than being silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GROSS_ERROR_RATIO = 0.2  # a pitch error above 20% of the reference F0 is "gross"

# Tracker name -> librosa.pyin settings. "pyin" is coarser than librosa's defaults (20-cent pitch bins,
# 20 voicing thresholds instead of 10 cents and 100): about 3x faster, and far finer than the 20%
# (~316 cents) gross-error threshold. "pyin-fine" is librosa's defaults, for when cents matter.
PYIN_SETTINGS = {
    "pyin": {"resolution": 0.2, "n_thresholds": 20},
    "pyin-fine": {"resolution": 0.1, "n_thresholds": 100},
}
TRACKERS = tuple(PYIN_SETTINGS)


@dataclass(frozen=True)
class F0Track:
    """F0 per frame: f0 (N,) in Hz (0 where unvoiced) and voiced (N,) bool, one frame every hop_seconds."""

    f0: np.ndarray
    voiced: np.ndarray
    hop_seconds: float

    def __len__(self) -> int:
        return len(self.f0)


def track_f0(wave: np.ndarray, sample_rate: int, *, tracker: str = "pyin", hop_seconds: float = 0.01,
             fmin: float = 50.0, fmax: float = 550.0) -> F0Track:
    """F0 of `wave` (T,) float32 by probabilistic YIN (librosa.pyin), one frame per `hop_seconds`.

    The analysis window is 64 ms at 16 kHz (two periods of 50 Hz fit). Audio shorter than a window is
    padded; silence comes out unvoiced.

    Raises:
        ValueError: an unknown tracker.
    """
    import librosa

    if tracker not in PYIN_SETTINGS:
        raise ValueError(f"unknown pitch tracker {tracker!r}; choose one of {sorted(PYIN_SETTINGS)}")
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    hop = max(1, int(round(hop_seconds * sample_rate)))
    frame_length = int(2 ** math.ceil(math.log2(2.0 * sample_rate / fmin)))
    if len(wave) < frame_length:
        wave = np.pad(wave, (0, frame_length - len(wave)))
    f0, voiced, _ = librosa.pyin(wave, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame_length,
                                 hop_length=hop, **PYIN_SETTINGS[tracker])
    voiced = np.asarray(voiced, dtype=bool) & np.isfinite(f0)
    return F0Track(f0=np.where(voiced, f0, 0.0), voiced=voiced, hop_seconds=hop / sample_rate)


@dataclass(frozen=True)
class F0Errors:
    """GPE, VDE, FFE (shares in [0, 1]) and F0 RMSE in cents; see the module docstring.

    gpe and rmse_cents are NaN when no frame is voiced on both sides; all are NaN with no frames at all.
    """

    gpe: float
    vde: float
    ffe: float
    rmse_cents: float
    frames: int
    voiced_both: int


def f0_errors(reference: F0Track, estimate: F0Track) -> F0Errors:
    """The F0 errors of `estimate` against `reference` (same hop; lengths may differ, see the module)."""
    if not math.isclose(reference.hop_seconds, estimate.hop_seconds, rel_tol=1e-6):
        raise ValueError(f"F0 tracks with different hops: {reference.hop_seconds} s and {estimate.hop_seconds} s")
    frames = max(len(reference), len(estimate))
    if frames == 0:
        return F0Errors(math.nan, math.nan, math.nan, math.nan, 0, 0)
    f0_ref, voiced_ref = _padded(reference, frames)
    f0_est, voiced_est = _padded(estimate, frames)
    voicing_error = voiced_ref != voiced_est
    both = voiced_ref & voiced_est
    gross = np.zeros(frames, dtype=bool)
    gross[both] = np.abs(f0_est[both] - f0_ref[both]) > GROSS_ERROR_RATIO * f0_ref[both]
    voiced_both = int(both.sum())
    cents = 1200.0 * np.log2(f0_est[both] / f0_ref[both])
    return F0Errors(
        gpe=float(gross.sum() / voiced_both) if voiced_both else math.nan,
        vde=float(voicing_error.mean()),
        ffe=float((voicing_error | gross).mean()),
        rmse_cents=float(np.sqrt(np.mean(cents ** 2))) if voiced_both else math.nan,
        frames=frames, voiced_both=voiced_both,
    )


def _padded(track: F0Track, frames: int) -> tuple[np.ndarray, np.ndarray]:
    extra = frames - len(track)
    return np.pad(track.f0, (0, extra)), np.pad(track.voiced, (0, extra), constant_values=False)
