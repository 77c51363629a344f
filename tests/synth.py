"""Generated audio for tests: speech-like bursts separated by pauses, at any rate and channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile



def speech_like(seconds: float, rate: int = 16000, seed: int = 0, level_db: float = -20.0) -> np.ndarray:
    """Harmonic bursts with a wandering pitch and syllable-like envelope, (T,) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 40 * seed % 3 + 20 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) ** 2
    signal = voiced * envelope + 0.05 * rng.standard_normal(len(t))
    return _scale(signal, level_db)


def with_pauses(pieces: list[float], pause: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like pieces of the given lengths separated by `pause` seconds of near-silence (-70 dBFS)."""
    rng = np.random.default_rng(seed + 100)
    parts = []
    for number, seconds in enumerate(pieces):
        if number:
            parts.append(_scale(rng.standard_normal(int(pause * rate)), -70.0))
        parts.append(speech_like(seconds, rate, seed + number))
    return np.concatenate(parts).astype(np.float32)


def _scale(signal: np.ndarray, level_db: float) -> np.ndarray:
    rms = np.sqrt(np.mean(signal**2)) or 1.0
    return (signal / rms * 10 ** (level_db / 20)).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = 16000, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, **options)
    return path
