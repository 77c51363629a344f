"""Tests for the synthetic demo corpus: .venv/bin/pytest tests/test_demo.py -q"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from unitvox.demo import synthesise_corpus

SPEAKERS = 2
UTTERANCES = 2
NOISE_FLOOR_DBFS = -60.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Path]]:
    out_dir = tmp_path_factory.mktemp("demo-corpus")
    return out_dir, synthesise_corpus(out_dir, speakers=SPEAKERS, utterances_per_speaker=UTTERANCES, seed=0)


def _read(path: Path) -> np.ndarray:
    audio, _ = soundfile.read(path, dtype="float32")
    return audio


def _dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(samples**2)) + 1e-12))


def _longest_quiet_seconds(audio: np.ndarray, sample_rate: int, threshold_dbfs: float) -> float:
    """Longest run of 10 ms frames whose RMS stays below the threshold."""
    frame = sample_rate // 100
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    quiet = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12) < threshold_dbfs
    longest = current = 0
    for is_quiet in quiet:
        current = current + 1 if is_quiet else 0
        longest = max(longest, current)
    return longest * frame / sample_rate


def _median_pitch_hz(audio: np.ndarray, sample_rate: int) -> float:
    """Median fundamental frequency over the loud frames."""
    pitch = librosa.yin(audio, fmin=60, fmax=400, sr=sample_rate)
    loudness = librosa.feature.rms(y=audio)[0][: len(pitch)]
    return float(np.median(pitch[loudness > 0.1 * loudness.max()]))


def test_layout_is_speaker_folder_then_numbered_files(corpus):
    out_dir, paths = corpus
    expected = sorted(
        out_dir / f"spk{speaker:02d}" / f"spk{speaker:02d}-{utterance:04d}.wav"
        for speaker in range(SPEAKERS)
        for utterance in range(UTTERANCES)
    )
    assert paths == expected
    assert all(path.is_file() for path in paths)
    assert sorted(out_dir.rglob("*")) == sorted(set(expected) | {path.parent for path in expected})


def test_files_are_mono_16bit_at_espeak_rate(corpus):
    for path in corpus[1]:
        info = soundfile.info(path)
        assert (info.channels, info.samplerate, info.subtype) == (1, 22050, "PCM_16")


def test_speech_is_long_and_loud_enough(corpus):
    for path in corpus[1]:
        audio = _read(path)
        assert len(audio) / 22050 > 0.5
        assert _dbfs(audio) > NOISE_FLOOR_DBFS + 30
        assert 0.6 < np.max(np.abs(audio)) < 0.8  # peak near -3 dBFS


def test_silence_carries_the_noise_floor_not_digital_zero(corpus):
    audio = _read(corpus[1][0])
    quietest_frame = min(_dbfs(audio[start:start + 220]) for start in range(0, len(audio) - 220, 220))
    assert NOISE_FLOOR_DBFS - 6 < quietest_frame < NOISE_FLOOR_DBFS + 6


def test_speakers_sound_different(corpus):
    out_dir, _ = corpus
    pitches = [
        _median_pitch_hz(_read(out_dir / f"spk{speaker:02d}" / f"spk{speaker:02d}-0001.wav"), 22050)
        for speaker in (0, 1)
    ]
    assert max(pitches) / min(pitches) > 1.3, pitches


def test_first_utterance_is_a_long_reading_with_pauses(corpus):
    out_dir, _ = corpus
    for speaker in range(SPEAKERS):
        audio = _read(out_dir / f"spk{speaker:02d}" / f"spk{speaker:02d}-0000.wav")
        assert 15 < len(audio) / 22050 <= 30.5
        assert _longest_quiet_seconds(audio, 22050, threshold_dbfs=-40) >= 0.5


def test_rerun_keeps_existing_files_and_fills_gaps(corpus):
    out_dir, paths = corpus
    missing = paths[-1]
    original = _read(missing)
    missing.unlink()
    modified = {path: path.stat().st_mtime_ns for path in paths[:-1]}

    rerun = synthesise_corpus(out_dir, speakers=SPEAKERS, utterances_per_speaker=UTTERANCES, seed=0)

    assert rerun == paths
    assert {path: path.stat().st_mtime_ns for path in paths[:-1]} == modified
    # Same sentence, voice and noise; espeak-ng's pitch flutter may shift a few samples.
    refilled = _read(missing)
    assert abs(len(refilled) - len(original)) < 0.05 * len(original)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="speakers=0"):
        synthesise_corpus(tmp_path, speakers=0)


def test_missing_library_is_reported_with_its_path():
    from unitvox.demo import _Espeak

    with pytest.raises(RuntimeError, match="/nonexistent/libespeak-ng.so"):
        _Espeak("/nonexistent/libespeak-ng.so", "/nonexistent/espeak-ng-data")


def test_missing_data_folder_raises_instead_of_exiting():
    # In a child process, so the failed initialisation cannot disturb the engine the other tests share.
    script = (
        "import espeakng_loader\n"
        "from unitvox.demo import _Espeak\n"
        "try:\n"
        "    _Espeak(espeakng_loader.get_library_path(), '/nonexistent/espeak-ng-data')\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "/nonexistent/espeak-ng-data" in result.stdout
