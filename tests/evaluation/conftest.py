"""Real speech for the evaluation metrics: the first utterances of each reader of the speech corpus."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import soundfile

RATE = 16000


@dataclass(frozen=True)
class Utterance:
    """One corpus utterance at 16 kHz: its reader, its file name and its samples (T,) float32."""

    speaker: str
    name: str
    wave: np.ndarray


def read_utterance(path, seconds: float | None = None) -> np.ndarray:
    """A corpus file as (T,) float32 mono at 16 kHz, cut to its first `seconds` when given."""
    import soxr

    wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if rate != RATE:
        wave = soxr.resample(wave, rate, RATE)
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    return wave if seconds is None else wave[: int(seconds * RATE)]


@pytest.fixture(scope="session")
def corpus_utterances(speech_corpus):
    """`take(speakers, per_speaker, seconds)`: utterances of the first readers (sorted by id), each cut
    to `seconds`, reader by reader. Works on librispeech-mini and on the synthetic corpus alike."""

    def take(speakers: int, per_speaker: int = 1, seconds: float | None = None) -> list[Utterance]:
        readers = sorted(folder for folder in speech_corpus.iterdir() if folder.is_dir())[:speakers]
        chosen = []
        for reader in readers:
            files = sorted(p for p in reader.iterdir() if p.suffix in (".flac", ".wav"))
            chosen += [Utterance(reader.name, path.stem, read_utterance(path, seconds)) for path in files[:per_speaker]]
        return chosen

    return take
