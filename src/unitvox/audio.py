"""Decoding, resampling, level measurement and silence-based splitting of speech audio.

Pure functions over numpy arrays of float32 samples in [-1, 1]; no store, no stage logic.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from unitvox.config import ChecksConfig, SplitConfig

_FLOOR_DB = -120.0
_DYNAMIC_RANGE_DB = 15.0


class AudioError(ValueError):
    """Audio that cannot be used; `reason` is a short code for reports, the message a sentence."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Levels:
    """Level figures of a stretch of audio (dB relative to full scale)."""

    peak_db: float
    rms_db: float
    silence_ratio: float
    clipped_ratio: float

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in self.__dict__.items()}


def decode(path: str | Path) -> tuple[np.ndarray, int, int]:
    """Read an audio file as float32 samples, shape (frames, channels), with its rate and channel count.

    Raises:
        AudioError: an empty or undecodable file, or one holding NaN or infinite samples.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise AudioError("empty", "empty file (0 bytes)")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile reports bad data through several exception types
        kind = path.suffix.lstrip(".").lower() or "audio"
        raise AudioError("undecodable", (
            f"cannot decode as {kind}: truncated, corrupt or not audio ({path.stat().st_size} bytes); "
            f"libsndfile says: {error}"
        )) from None
    if samples.size == 0:
        raise AudioError("empty", "no audio frames in the file")
    bad = ~np.isfinite(samples)
    if bad.any():
        nans = int(np.isnan(samples).sum())
        raise AudioError("non_finite", f"{nans} NaN and {int(bad.sum()) - nans} infinite samples")
    return samples, int(rate), int(samples.shape[1])


def to_mono(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Average channels and resample to `target_rate`; returns shape (T,) float32."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def to_db(value: np.ndarray | float) -> np.ndarray:
    return np.maximum(20.0 * np.log10(np.maximum(value, 1e-12)), _FLOOR_DB)


def frame_levels_db(samples: np.ndarray, rate: int, frame_seconds: float) -> np.ndarray:
    """RMS level of each non-overlapping frame in dBFS, shape (T // frame,)."""
    frame = max(1, int(round(frame_seconds * rate)))
    count = len(samples) // frame
    if count == 0:
        return to_db(np.sqrt(np.mean(samples**2)) if len(samples) else 0.0)[None]
    frames = samples[: count * frame].reshape(count, frame).astype(np.float64)
    return to_db(np.sqrt(np.mean(frames**2, axis=1)))


def measure(samples: np.ndarray, rate: int, split: SplitConfig, checks: ChecksConfig) -> Levels:
    levels = frame_levels_db(samples, rate, split.frame_seconds)
    magnitude = np.abs(samples)
    return Levels(
        peak_db=float(to_db(magnitude.max(initial=0.0))),
        rms_db=float(to_db(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))),
        silence_ratio=float(np.mean(levels < split.silence_db)),
        clipped_ratio=float(np.mean(magnitude >= checks.clip_level)),
    )


def speech_regions(levels_db: np.ndarray, silence_db: float, min_pause_frames: int) -> list[tuple[int, int]]:
    """Runs of frames separated by pauses of at least `min_pause_frames` frames below `silence_db`.

    Returns (start, end) frame indices, end exclusive; shorter pauses stay inside a region.
    """
    loud = np.flatnonzero(levels_db >= silence_db)
    if loud.size == 0:
        return []
    gaps = np.flatnonzero(np.diff(loud) > min_pause_frames)
    starts = np.concatenate([[loud[0]], loud[gaps + 1]])
    ends = np.concatenate([loud[gaps] + 1, [loud[-1] + 1]])
    return list(zip(starts.tolist(), ends.tolist()))


def plan_segments(
    regions: list[tuple[int, int]], total_frames: int, split: SplitConfig
) -> list[tuple[int, int]]:
    """Pack speech regions greedily into segments no longer than `max_segment_seconds`.

    Each segment keeps `keep_silence_seconds` of context either side; a region longer than the
    maximum is cut into equal pieces. Returns (start, end) in frames.
    """
    keep = int(round(split.keep_silence_seconds / split.frame_seconds))
    limit = int(split.max_segment_seconds / split.frame_seconds) - 2 * keep
    pieces: list[tuple[int, int]] = []
    for start, end in regions:
        parts = max(1, -(-(end - start) // limit))
        bounds = np.linspace(start, end, parts + 1).round().astype(int)
        pieces.extend(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    segments: list[tuple[int, int]] = []
    for start, end in pieces:
        if segments and end - segments[-1][0] <= limit:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((start, end))
    return [(max(0, s - keep), min(total_frames, e + keep)) for s, e in segments]


def split(samples: np.ndarray, rate: int, config: SplitConfig) -> list[tuple[int, int]]:
    """Sample ranges to cut: the whole file when it is short enough, else pieces cut at pauses.

    Raises:
        AudioError: the file holds no frame above the silence threshold.
    """
    frame = max(1, int(round(config.frame_seconds * rate)))
    levels = frame_levels_db(samples, rate, config.frame_seconds)
    if not np.any(levels >= config.silence_db):
        loudest, floor = float(levels.max()), float(np.percentile(levels, 10))
        if loudest - floor > _DYNAMIC_RANGE_DB:  # something rises over the floor: quiet speech, not silence
            raise AudioError("too_quiet", (
                f"loudest frame {loudest:.1f} dBFS never reaches the speech threshold {config.silence_db:g} dBFS; "
                "raise the recording's gain or lower prepare.split.silence_db"
            ))
        raise AudioError("silent", f"no speech: every frame is below {config.silence_db:g} dBFS")
    if len(samples) <= config.max_segment_seconds * rate:
        return [(0, len(samples))]
    min_pause = int(round(config.min_pause_seconds / config.frame_seconds))
    regions = speech_regions(levels, config.silence_db, min_pause)
    ranges = [(s * frame, min(len(samples), e * frame)) for s, e in plan_segments(regions, len(levels), config)]
    if ranges and len(samples) - ranges[-1][1] < frame:
        ranges[-1] = (ranges[-1][0], len(samples))  # keep the tail a frame grid would drop
    return ranges


def check(levels: Levels, duration: float, checks: ChecksConfig) -> tuple[str, str] | None:
    """The first check a segment fails, as (reason code, sentence), or None when it passes."""
    if duration < checks.min_seconds:
        return "too_short", f"{duration:.2f} s is shorter than min_seconds {checks.min_seconds:g}"
    if levels.rms_db < checks.min_rms_db:
        return "too_quiet", f"RMS {levels.rms_db:.1f} dBFS is below min_rms_db {checks.min_rms_db:g}"
    if levels.silence_ratio > checks.max_silence_ratio:
        return "mostly_silent", (
            f"{levels.silence_ratio:.0%} of frames are silent, more than max_silence_ratio {checks.max_silence_ratio:g}"
        )
    if levels.clipped_ratio > checks.max_clipped_ratio:
        return "clipped", (
            f"{levels.clipped_ratio:.2%} of samples reach the clip level, more than max_clipped_ratio "
            f"{checks.max_clipped_ratio:g}"
        )
    return None


def encode_flac(samples: np.ndarray, rate: int) -> bytes:
    """16-bit FLAC bytes of mono float samples (clipped to [-1, 1])."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def read_mono(path: str | Path) -> tuple[np.ndarray, int]:
    """A prepared segment as (T,) float32 samples and its rate."""
    samples, rate = soundfile.read(path, dtype="float32", always_2d=False)
    return (samples.mean(axis=1) if samples.ndim == 2 else samples), int(rate)
