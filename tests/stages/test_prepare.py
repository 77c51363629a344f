"""prepare: bad input is reported and skipped, good input survives, shards merge, reruns resume."""

import numpy as np
import pytest
import soundfile

from synth import speech_like, with_pauses, write
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
    assert "readme.txt" not in rejected and "readme.txt" not in kept_sources
    long_segments = [row for row in kept if row["source"].endswith("long.wav")]
    assert len(long_segments) >= 2, "a 32 s file must be split at its pauses"
    for row in kept:
        samples, rate = soundfile.read(store.local_root / row["audio"])
        assert rate == 16000 and samples.ndim == 1
        assert abs(len(samples) / rate - row["duration"]) < 0.01
        assert row["speaker"] in ("alice", "bob")
    report = store.read_json(REPORT)
    assert report["files"] == 12
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
    with pytest.raises(ConfigError, match="no wav/flac/ogg/mp3 files"):
        list_sources(_config(tmp_path / "empty").prepare)


def test_progress_reaches_the_metrics_sink(tmp_path, messy_input):
    from unitvox.metrics import MemorySink

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
