"""Decoding, resampling, level measurement and silence-based splitting of speech audio.

Pure functions over numpy arrays of float32 samples in [-1, 1]; no store, no stage logic.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from unitvox.config import ChecksConfig, SplitConfig

_FLOOR_DB = -120.0
_DYNAMIC_RANGE_DB = 15.0

DECODABLE_EXTENSIONS = ("wav", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "au", "caf", "w64", "rf64")
"""File extensions libsndfile decodes here (opus and vorbis in Ogg, MPEG layer III, AIFF, ...).
Not decodable: AAC/M4A, WMA, AC-3 and video containers; convert those first (ffmpeg -i in.m4a out.flac)."""

IN_MEMORY_SAMPLES = 1 << 22
"""Files of at most this many decoded samples (frames times channels, 16 MiB as float32) are
decoded in one piece (peak memory about five times that); longer ones stream in blocks, so memory does not grow with a file's length."""

BLOCK_FRAMES = 1 << 16
"""Frames decoded at a time when a file streams."""


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
    _check_not_empty(path)
    try:
        # A bytes path: soundfile cannot encode a str path whose name is not valid UTF-8.
        samples, rate = soundfile.read(os.fsencode(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile reports bad data through several exception types
        raise _undecodable(path, error) from None
    if samples.size == 0:
        raise AudioError("empty", "no audio frames in the file")
    bad = ~np.isfinite(samples)
    if bad.any():
        nans = int(np.isnan(samples).sum())
        raise AudioError("non_finite", f"{nans} NaN and {int(bad.sum()) - nans} infinite samples")
    return samples, int(rate), int(samples.shape[1])


def _check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise AudioError("unreadable", f"cannot read the file: {error.strerror or error}") from None
    if size == 0:
        raise AudioError("empty", "empty file (0 bytes)")


def _undecodable(path: Path, error: Exception) -> AudioError:
    if isinstance(error, PermissionError):
        return AudioError("unreadable", f"cannot read the file: {error.strerror or error}")
    kind = path.suffix.lstrip(".").lower() or "audio"
    return AudioError("undecodable", (
        f"cannot decode as {kind}: truncated, corrupt or not audio ({path.stat().st_size} bytes); "
        f"libsndfile says: {error}"
    ))


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: sample rate, channels and frames (per channel)."""

    rate: int
    channels: int
    frames: int

    @property
    def fits_in_memory(self) -> bool:
        return 0 <= self.frames * self.channels <= IN_MEMORY_SAMPLES


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header only.

    Raises:
        AudioError: an empty, unreadable or undecodable file.
    """
    path = Path(path)
    _check_not_empty(path)
    try:
        info = soundfile.info(os.fsencode(path))
    except Exception as error:
        raise _undecodable(path, error) from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def stream_mono(path: str | Path, target_rate: int, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """A recording as consecutive (n,) float32 blocks of mono audio at `target_rate`, decoded and
    resampled a block at a time; the blocks joined equal `to_mono(decode(path))`.

    Raises:
        AudioError: the file cannot be read or decoded, or holds NaN or infinite samples.
    """
    path = Path(path)
    try:
        sound = soundfile.SoundFile(os.fsencode(path))
    except Exception as error:
        raise _undecodable(path, error) from None
    with sound:
        stream = None
        if sound.samplerate != target_rate:
            stream = soxr.ResampleStream(sound.samplerate, target_rate, 1, dtype="float32", quality="HQ")
        nans = infinite = 0
        while True:
            try:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
            except Exception as error:
                raise _undecodable(path, error) from None
            last = len(block) < block_frames
            bad = ~np.isfinite(block)
            if bad.any():
                nans += int(np.isnan(block).sum())
                infinite += int(bad.sum()) - int(np.isnan(block).sum())
            if nans or infinite:
                if last:
                    raise AudioError("non_finite", f"{nans} NaN and {infinite} infinite samples")
                continue
            mono = block.mean(axis=1)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                return


class FrameLevels:
    """`frame_levels_db` over a stream of blocks: feed blocks in order, then take `levels()`."""

    def __init__(self, rate: int, frame_seconds: float):
        self.frame = max(1, int(round(frame_seconds * rate)))
        self.samples = 0
        self._carry = np.zeros(0, dtype=np.float32)
        self._levels: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        self.samples += len(block)
        joined = np.concatenate([self._carry, block]) if len(self._carry) else block
        count = len(joined) // self.frame
        if count:
            frames = joined[: count * self.frame].reshape(count, self.frame).astype(np.float64)
            self._levels.append(to_db(np.sqrt(np.mean(frames**2, axis=1))))
        self._carry = joined[count * self.frame:].copy()

    def levels(self) -> np.ndarray:
        if not self._levels:  # shorter than one frame: the level of what there is
            return to_db(np.sqrt(np.mean(self._carry.astype(np.float64) ** 2)) if len(self._carry) else 0.0)[None]
        return np.concatenate(self._levels)


def cut(blocks: Iterator[np.ndarray], ranges: list[tuple[int, int]]) -> Iterator[tuple[int, int, np.ndarray]]:
    """The samples of each (start, end) range from a stream of blocks, in order.

    Holds at most one range and one block, so memory does not grow with the stream's length.
    `ranges` must be sorted, with starts and ends both increasing (as `split` returns them).
    """
    pending = iter(ranges)
    current = next(pending, None)
    buffer, offset = np.zeros(0, dtype=np.float32), 0  # offset: stream position of buffer[0]
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while current is not None and offset + len(buffer) >= current[1]:
            start, end = current
            yield start, end, buffer[start - offset:end - offset].copy()
            current = next(pending, None)
        keep_from = current[0] if current is not None else offset + len(buffer)
        drop = min(max(0, keep_from - offset), len(buffer))
        buffer, offset = buffer[drop:], offset + drop
        if current is None:
            return
    while current is not None:  # a stream shorter than planned ends its last ranges early
        start, end = current
        yield start, min(end, offset + len(buffer)), buffer[max(0, start - offset):end - offset].copy()
        current = next(pending, None)


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
    return split_levels(frame_levels_db(samples, rate, config.frame_seconds), len(samples), rate, config)


def split_levels(levels: np.ndarray, total: int, rate: int, config: SplitConfig) -> list[tuple[int, int]]:
    """`split` from the frame levels of `total` samples, for audio that is not held in memory whole."""
    frame = max(1, int(round(config.frame_seconds * rate)))
    if not np.any(levels >= config.silence_db):
        loudest, floor = float(levels.max()), float(np.percentile(levels, 10))
        if loudest - floor > _DYNAMIC_RANGE_DB:  # something rises over the floor: quiet speech, not silence
            raise AudioError("too_quiet", (
                f"loudest frame {loudest:.1f} dBFS never reaches the speech threshold {config.silence_db:g} dBFS; "
                "raise the recording's gain or lower prepare.split.silence_db"
            ))
        raise AudioError("silent", f"no speech: every frame is below {config.silence_db:g} dBFS")
    if total <= config.max_segment_seconds * rate:
        return [(0, total)]
    min_pause = int(round(config.min_pause_seconds / config.frame_seconds))
    regions = speech_regions(levels, config.silence_db, min_pause)
    ranges = [(s * frame, min(total, e * frame)) for s, e in plan_segments(regions, len(levels), config)]
    if ranges and total - ranges[-1][1] < frame:
        ranges[-1] = (ranges[-1][0], total)  # keep the tail a frame grid would drop
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


def read_mono(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """A prepared segment's samples [start, stop) (all by default) as (T,) float32, and its rate."""
    samples, rate = soundfile.read(os.fsencode(path), dtype="float32", always_2d=False, start=start, stop=stop)
    return (samples.mean(axis=1) if samples.ndim == 2 else samples), int(rate)


def frame_count(path: str | Path) -> int:
    """A sound file's length in samples per channel, read from its header."""
    return soundfile.info(os.fsencode(path)).frames
