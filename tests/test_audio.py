"""Level measurement, silence splitting and segment checks on generated signals."""

import numpy as np
import pytest

from synth import speech_like, with_pauses, write
from unitvox import audio
from unitvox.config import ChecksConfig, SplitConfig


def test_split_keeps_short_files_whole():
    samples = speech_like(4.0)
    assert audio.split(samples, 16000, SplitConfig()) == [(0, len(samples))]


def test_split_cuts_long_files_at_pauses_only():
    samples = with_pauses([6.0, 6.0, 6.0, 6.0], pause=0.8)
    ranges = audio.split(samples, 16000, SplitConfig(max_segment_seconds=10.0))
    assert len(ranges) == 4
    pause_starts = [int(16000 * (6.0 * (i + 1) + 0.8 * i)) for i in range(3)]
    for (start, end), pause in zip(ranges[:-1], pause_starts):
        assert pause <= end <= pause + int(0.8 * 16000), "cut must fall inside a pause"
    assert all(end - start <= 10.0 * 16000 for start, end in ranges)


def test_short_pauses_do_not_split():
    samples = with_pauses([8.0, 8.0, 8.0], pause=0.3)
    ranges = audio.split(samples, 16000, SplitConfig(max_segment_seconds=30.0))
    assert ranges == [(0, len(samples))]


def test_region_longer_than_the_maximum_is_cut_evenly():
    samples = speech_like(25.0)
    ranges = audio.split(samples, 16000, SplitConfig(max_segment_seconds=10.0))
    assert len(ranges) == 3
    assert all(end - start <= 10 * 16000 for start, end in ranges)


def test_silent_audio_is_refused():
    with pytest.raises(audio.AudioError, match="every frame is below -40 dBFS") as error:
        audio.split(np.full(16000 * 30, 1e-4, dtype=np.float32), 16000, SplitConfig())
    assert error.value.reason == "silent"


def test_levels_and_checks():
    split, checks = SplitConfig(), ChecksConfig()
    loud = speech_like(3.0, level_db=-20)
    levels = audio.measure(loud, 16000, split, checks)
    assert levels.rms_db == pytest.approx(-20.0, abs=0.1)
    assert audio.check(levels, 3.0, checks) is None
    quiet = audio.measure(speech_like(3.0, level_db=-55), 16000, split, checks)
    assert audio.check(quiet, 3.0, checks)[0] == "too_quiet"
    assert audio.check(levels, 0.5, checks)[0] == "too_short"
    clipped = np.clip(loud * 30, -1, 1)
    assert audio.check(audio.measure(clipped, 16000, split, checks), 3.0, checks)[0] == "clipped"
    mostly_silent = with_pauses([0.5, 0.5], pause=3.0)
    level = audio.measure(mostly_silent, 16000, split, checks)
    assert audio.check(level, 4.0, checks)[0] == "mostly_silent"


def test_decode_downmixes_and_resamples(tmp_path):
    stereo = np.stack([speech_like(2.0, 48000), speech_like(2.0, 48000, seed=1)], axis=1)
    path = write(tmp_path / "s.wav", stereo, 48000)
    samples, rate, channels = audio.decode(path)
    assert (rate, channels) == (48000, 2)
    mono = audio.to_mono(samples, rate, 16000)
    assert mono.ndim == 1 and abs(len(mono) - 32000) <= 1


def test_decode_reports_nan_and_empty(tmp_path):
    bad = speech_like(1.0)
    bad[100:110] = np.nan
    path = write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="10 NaN") as error:
        audio.decode(path)
    assert error.value.reason == "non_finite"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(audio.AudioError, match="empty file"):
        audio.decode(empty)
