"""prepare: bad input is reported and skipped, good input survives, shards merge, reruns resume."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from synth import speech_like, with_pauses, write
from unitvox import audio
from unitvox.config import ConfigError, load
from unitvox.stages import Shard, run_stage
from unitvox.stages.prepare import MANIFEST, REJECTED, REPORT, list_sources, speaker_of
from unitvox.store import LocalStore


@pytest.fixture
def messy_input(tmp_path):
    """A folder with every kind of bad file next to good ones in odd formats."""
    root = tmp_path / "raw"
    write(root / "alice" / "good.flac", speech_like(3.0, seed=1), 16000)
    write(root / "alice" / "stereo48k.wav", np.stack([speech_like(3.0, 48000, 2)] * 2, 1), 48000)
    write(root / "bob" / "eight_bit.wav", speech_like(3.0, 22050, 3), 22050, subtype="PCM_U8")
    write(root / "bob" / "vorbis.ogg", speech_like(3.0, 44100, 4), 44100, format="OGG", subtype="VORBIS")
    write(root / "bob" / "lame.mp3", speech_like(3.0, 16000, 5), 16000, format="MP3", subtype="MPEG_LAYER_III")
    write(root / "bob" / "long.wav", with_pauses([8.0, 7.0, 9.0, 6.0], pause=0.7), 16000)
    (root / "carol").mkdir()
    (root / "carol" / "empty.wav").write_bytes(b"")
    (root / "carol" / "notes.wav").write_text("this is a text file, not audio\n")
    flac = write(root / "carol" / "truncated.flac", speech_like(4.0, seed=6), 16000)
    flac.write_bytes(flac.read_bytes()[:200])
    nan = speech_like(3.0, seed=7)
    nan[1000:1005] = np.nan
    write(root / "carol" / "nan.wav", nan, 16000, subtype="FLOAT")
    write(root / "carol" / "silent.wav", np.full(16000 * 40, 1e-4, dtype=np.float32), 16000)
    write(root / "carol" / "whisper.wav", with_pauses([1.0, 1.0, 1.0], pause=0.6, seed=8) * 0.01, 16000)
    (root / "carol" / "readme.txt").write_text("not an input: wrong extension\n")
    return root


def _config(source, *overrides):
    return load("jobs/demo.yaml", [f"prepare.input={source}", *overrides])


def _rows(store, key):
    return list(store.read_jsonl(key))


def test_bad_input_is_rejected_with_reasons_and_good_input_kept(tmp_path, messy_input):
    store = LocalStore(str(tmp_path / "run"))
    result = run_stage(_config(messy_input), store, "prepare")
    assert result.status == "ran"
    kept = _rows(store, MANIFEST)
    rejected = {row["source"].rsplit("/", 1)[1]: row for row in _rows(store, REJECTED)}
    kept_sources = {row["source"].rsplit("/", 1)[1] for row in kept}
    assert {"good.flac", "stereo48k.wav", "eight_bit.wav", "vorbis.ogg", "lame.mp3", "long.wav"} <= kept_sources
    assert rejected["empty.wav"]["reason"] == "empty"
    assert rejected["notes.wav"]["reason"] == "undecodable"
    assert rejected["truncated.flac"]["reason"] in ("undecodable", "too_short")
    assert rejected["nan.wav"]["reason"] == "non_finite" and "5 NaN" in rejected["nan.wav"]["detail"]
    assert rejected["silent.wav"]["reason"] == "silent"
    assert rejected["whisper.wav"]["reason"] == "too_quiet"
    assert rejected["readme.txt"]["reason"] == "unsupported_format" and "readme.txt" not in kept_sources
    assert ".txt is not in prepare.extensions" in rejected["readme.txt"]["detail"]
    long_segments = [row for row in kept if row["source"].endswith("long.wav")]
    assert len(long_segments) >= 2, "a 32 s file must be split at its pauses"
    for row in kept:
        samples, rate = soundfile.read(store.local_root / row["audio"])
        assert rate == 16000 and samples.ndim == 1
        assert abs(len(samples) / rate - row["duration"]) < 0.01
        assert row["speaker"] in ("alice", "bob")
    report = store.read_json(REPORT)
    assert report["files"] == 12 and report["files_not_prepared"] == 1
    assert report["segments_kept"] == len(kept)
    assert report["rejected_by_reason"]["silent"] == 1
    assert sum(report["duration_histogram"]["counts"]) == len(kept)


def test_shards_merge_into_the_same_manifest(tmp_path, messy_input):
    whole = LocalStore(str(tmp_path / "whole"))
    run_stage(_config(messy_input), whole, "prepare")
    sharded = LocalStore(str(tmp_path / "sharded"))
    config = _config(messy_input, "prepare.shards=3")
    results = [run_stage(config, sharded, "prepare", shard=Shard(i, 3)) for i in range(3)]
    assert [r.status for r in results] == ["partial", "partial", "ran"]  # the last shard merges
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]
    assert strip(_rows(sharded, MANIFEST)) == strip(_rows(whole, MANIFEST))
    assert sharded.read_json(REPORT) == whole.read_json(REPORT)


def test_rerun_skips_and_resumes(tmp_path, messy_input):
    store = LocalStore(str(tmp_path / "run"))
    config = _config(messy_input)
    run_stage(config, store, "prepare")
    assert run_stage(config, store, "prepare").status == "skipped"
    # A kill mid-stage: the stage record and one recording's record are gone, its audio is kept.
    (store.local_root / "prepare" / "_SUCCESS.json").unlink()
    (store.local_root / "prepare" / "records" / "good.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in (store.local_root / "prepare" / "audio").rglob("*.flac")}
    result = run_stage(config, store, "prepare")
    assert result.status == "ran"
    after = {p: p.stat().st_mtime_ns for p in (store.local_root / "prepare" / "audio").rglob("*.flac")}
    rewritten = [p.name for p in before if after[p] != before[p]]
    assert rewritten == ["good_000.flac"]
    assert run_stage(config, store, "prepare", force=True).status == "ran"


def test_list_file_input_and_speaker_pattern(tmp_path):
    write(tmp_path / "a" / "x1.wav", speech_like(2.0), 16000)
    write(tmp_path / "b" / "deep" / "x1.wav", speech_like(2.0, seed=2), 16000)
    listing = tmp_path / "inputs.lst"
    listing.write_text(f"# comment\na/x1.wav\n{tmp_path}/b/deep/x1.wav\n\n")
    config = _config(listing)
    sources = list_sources(config.prepare)
    assert [s.source_id for s in sources] != ["x1", "x1"], "repeated stems must get distinct ids"
    assert len({s.source_id for s in sources}) == 2
    assert speaker_of("spk7/chapter/utt.flac", r"^(?P<speaker>[^/]+)/") == "spk7"
    assert speaker_of("utt.flac", r"^(?P<speaker>[^/]+)/") == "unknown"


def test_missing_or_empty_input_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="prepare.input: not set"):
        list_sources(_config("").prepare)
    with pytest.raises(ConfigError, match="neither a folder nor a list file"):
        list_sources(_config(tmp_path / "nowhere").prepare)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no wav/flac/ogg/opus/mp3/aiff/aif files"):
        list_sources(_config(tmp_path / "empty").prepare)
    (tmp_path / "empty" / "talk.m4a").write_bytes(b"not decodable here")
    with pytest.raises(ConfigError, match=r"no wav/.* files under .*\(1 other files, e.g. .*talk.m4a\)"):
        list_sources(_config(tmp_path / "empty").prepare)
    with pytest.raises(ConfigError, match=r"prepare.extensions: \['m4a'\] cannot be decoded here"):
        list_sources(_config(tmp_path / "empty", "prepare.extensions=[wav, m4a]").prepare)


def test_progress_reaches_the_metrics_sink(tmp_path, messy_input):
    from unitvox.prometheus import MemorySink

    sink = MemorySink()
    run_stage(_config(messy_input, "prepare.shards=1"), LocalStore(str(tmp_path / "run")), "prepare", metrics=sink)
    assert sink.get("stage_items_done", stage="prepare", shard="0") == 12
    assert sink.get("stage_items_planned", stage="prepare", shard="0") == 12


def test_s3_prefix_input_into_an_s3_run(tmp_path, s3_bucket):
    from unitvox.store import open_store

    raw = open_store(f"s3://{s3_bucket}/raw")
    for speaker in ("ann", "ben"):
        path = write(tmp_path / f"{speaker}.flac", speech_like(2.5, seed=len(speaker)), 16000)
        raw.upload_file(path, f"{speaker}/{speaker}-0001.flac")
    raw.write_text("ben/notes.txt", "ignored: not audio")
    run = open_store(f"s3://{s3_bucket}/runs/one")
    run_stage(_config(f"s3://{s3_bucket}/raw"), run, "prepare")
    kept = _rows(run, MANIFEST)
    assert [(row["speaker"], row["source"]) for row in kept] == [
        ("ann", f"s3://{s3_bucket}/raw/ann/ann-0001.flac"), ("ben", f"s3://{s3_bucket}/raw/ben/ben-0001.flac")]
    assert all(run.exists(row["audio"]) for row in kept)
    assert run_stage(_config(f"s3://{s3_bucket}/raw"), run, "prepare").status == "skipped"


@pytest.fixture
def awkward_input(tmp_path):
    """Files a real archive holds: a name that is not UTF-8, symbolic links that loop or dangle, a link
    to a folder listed already, opus and AIFF recordings, and formats prepare does not read."""
    root = tmp_path / "raw"
    write(root / "dora" / "plain.flac", speech_like(2.5, seed=11), 16000)
    write(root / "dora" / "voice.opus", speech_like(2.5, 48000, 12), 48000, format="OGG", subtype="OPUS")
    write(root / "dora" / "studio.aiff", speech_like(2.5, 44100, 13), 44100, format="AIFF", subtype="PCM_16")
    write(root / "dora" / "old.aif", speech_like(2.5, 22050, 14), 22050, format="AIFF", subtype="PCM_24")
    latin1 = write(root / "dora" / "latin1.wav", speech_like(2.5, seed=15), 16000)
    os.rename(latin1, os.fsencode(root / "dora") + b"/caf\xe9-r\xe9cit.wav")  # named on a Latin-1 system
    (root / "dora" / "chapter").mkdir()
    os.symlink("..", root / "dora" / "chapter" / "up")  # points back to an ancestor
    os.symlink("gone.wav", root / "dora" / "dangling.wav")
    os.symlink("itself.wav", root / "dora" / "itself.wav")
    os.symlink("dora", root / "again")  # the same folder a second time
    (root / "dora" / "talk.m4a").write_bytes(b"AAC in MP4: libsndfile cannot decode it")
    (root / "dora" / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    return root


def test_awkward_names_links_and_formats_are_prepared_or_reported_never_fatal(tmp_path, awkward_input):
    store = LocalStore(str(tmp_path / "run"))
    assert run_stage(_config(awkward_input), store, "prepare").status == "ran"
    kept = {row["source"].rsplit("/", 1)[1] for row in _rows(store, MANIFEST)}
    rejected = {row["source"].split("/raw/", 1)[1]: row for row in _rows(store, REJECTED)}
    assert kept == {"plain.flac", "voice.opus", "studio.aiff", "old.aif", "caf\\xe9-r\\xe9cit.wav"}
    assert {name: row["reason"] for name, row in rejected.items()} == {
        "again": "repeated_folder", "dora/chapter/up": "symlink_loop", "dora/dangling.wav": "dangling_link",
        "dora/itself.wav": "symlink_loop", "dora/talk.m4a": "unsupported_format",
        "dora/cover.jpg": "unsupported_format"}
    assert "libsndfile cannot decode it either" in rejected["dora/talk.m4a"]["detail"]
    assert "gone.wav, which does not exist" in rejected["dora/dangling.wav"]["detail"]
    report = store.read_json(REPORT)
    assert report["names_escaped"] == 1
    assert report["names_escaped_examples"] == [str(awkward_input / "dora" / "caf\\xe9-r\\xe9cit.wav")]
    assert report["files"] == 5 and report["files_not_prepared"] == 6 and report["segments_kept"] == 5
    # Every entry under the input is accounted for: prepared or rejected with a reason.
    entries = {Path(folder, name).relative_to(awkward_input).as_posix()
               for folder, dirs, files in os.walk(awkward_input) for name in files + dirs}
    accounted = set(rejected) | {f"dora/{name}" for name in kept} | {"dora", "dora/chapter"}
    assert {printable_name(e) for e in entries} == accounted
    assert run_stage(_config(awkward_input), store, "prepare").status == "skipped"


def printable_name(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def test_a_long_recording_streams_in_blocks_and_cuts_where_decoding_it_whole_does(tmp_path, monkeypatch):
    source = tmp_path / "raw" / "erin"
    pieces = [6.0, 9.0, 4.0, 12.0, 7.0, 3.0, 8.0]
    write(source / "lecture.wav", np.stack([with_pauses(pieces, pause=0.8, rate=44100)] * 2, 1), 44100)
    write(source / "interview.flac", with_pauses(pieces[::-1], pause=0.9, seed=3), 16000)
    whole = LocalStore(str(tmp_path / "whole"))
    run_stage(_config(tmp_path / "raw"), whole, "prepare")
    monkeypatch.setattr(audio, "IN_MEMORY_SAMPLES", 1000)
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 4096)
    streamed = LocalStore(str(tmp_path / "streamed"))
    run_stage(_config(tmp_path / "raw"), streamed, "prepare")
    rows = _rows(whole, MANIFEST)
    assert len(rows) >= 6 and rows == _rows(streamed, MANIFEST)
    assert _rows(whole, REJECTED) == _rows(streamed, REJECTED)
    for row in rows:
        assert (whole.local_root / row["audio"]).read_bytes() == (streamed.local_root / row["audio"]).read_bytes()


def test_stream_mono_joins_to_the_whole_decode_and_reports_bad_samples(tmp_path):
    path = write(tmp_path / "a.wav", np.stack([speech_like(5.0, 22050, 4)] * 3, 1), 22050)
    samples, rate, _ = audio.decode(path)
    streamed = np.concatenate(list(audio.stream_mono(path, 16000, block_frames=3000)))
    np.testing.assert_array_equal(streamed, audio.to_mono(samples, rate, 16000))
    nan = speech_like(5.0, seed=5)
    nan[40_000:40_003] = np.nan
    with pytest.raises(audio.AudioError, match="3 NaN and 0 infinite"):
        list(audio.stream_mono(write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT"), 16000, block_frames=3000))


@pytest.mark.e2e
def test_a_three_hour_recording_is_prepared_in_bounded_memory(tmp_path):
    """Measured in a child process by bench/prepare_memory.py, which prints the same figures."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "prepare_memory.py"
    # Loaded by path: bench/ is not a package.
    script = ("import importlib.util, json, pathlib; "
              f"spec = importlib.util.spec_from_file_location('prepare_memory', {str(bench)!r}); "
              "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench); "
              f"print(json.dumps(bench.measure(3.0, pathlib.Path({str(tmp_path)!r}))))")
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=False)
    finally:  # a 330 MiB recording and its segments
        shutil.rmtree(tmp_path / "raw", ignore_errors=True)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    print(f"\nprepare of a 3 h recording: {figures}")
    assert figures["hours_kept"] > 2.5 and figures["segments_kept"] > 500
    assert figures["peak_rss_mib"] < 1024, "peak memory must not grow with the recording's length"
