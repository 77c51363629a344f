"""tokenize: codebooks, units with timestamps, shard independence, the ssl extractor, the sample's feature cache, and resume after a kill."""

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from unitvox.config import load
from unitvox.stages import Shard, run_stage
from unitvox.layout import CODEBOOK, TOKENIZE_PARTS as PARTS, UNITS
from unitvox.stages.tokenize import assign, run_lengths
from unitvox.store import LocalStore
from unitvox.units.kmeans import Codebook

from tiny_encoders import save_tiny_wav2vec2


def _copy(prepared_run, tmp_path, name="run"):
    target = tmp_path / name
    shutil.copytree(prepared_run, target)
    return LocalStore(str(target))


def _config(*overrides):
    return load("jobs/demo.yaml", ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", *overrides])


def test_units_line_up_with_the_manifest_and_the_codebook(prepared_run, tmp_path):
    store = _copy(prepared_run, tmp_path)
    run_stage(_config(), store, "tokenize")
    manifest = list(store.read_jsonl("prepare/manifest.jsonl"))
    rows = list(store.read_jsonl(UNITS))
    assert [r["id"] for r in rows] == [m["id"] for m in manifest]
    codebook = Codebook.load(store, CODEBOOK)
    assert codebook.centroids.shape == (20, codebook.fingerprint["dim"])  # the extractor's feature width
    assert {"extractor", "sample_rate", "hop_seconds", "k", "seed", "hash"} <= set(codebook.fingerprint)
    for row, segment in zip(rows, manifest):
        units = np.array(row["units"])
        assert len(units) == int(round(segment["duration"] * 16000)) // 320
        assert units.min() >= 0 and units.max() < 20
        assert row["codebook"] == codebook.hash
        assert sum(row["run_durations"]) == len(units)
        assert np.repeat(row["run_units"], row["run_durations"]).tolist() == row["units"]
        starts = np.concatenate([[0], np.cumsum(row["run_durations"])[:-1]]) * 0.02
        assert np.allclose(row["run_starts"], starts, atol=1e-3)
    report = store.read_json("tokenize/report.json")
    assert report["units_used"] > 10 and report["perplexity"] > 5


def test_shard_count_does_not_change_the_units(prepared_run, tmp_path):
    one, three = _copy(prepared_run, tmp_path, "one"), _copy(prepared_run, tmp_path, "three")
    run_stage(_config("tokenize.shards=1"), one, "tokenize")
    config = _config("tokenize.shards=3")
    for phase in ("sample", "fit", "assign", "merge"):
        shards = [Shard(i, 3) for i in range(3)] if phase in ("sample", "assign") else [None]
        for shard in shards:
            run_stage(config, three, "tokenize", phase=phase, shard=shard)
    assert one.read_bytes(UNITS) == three.read_bytes(UNITS)


def test_run_lengths():
    runs = run_lengths(np.array([3, 3, 3, 7, 7, 1]), 0.02)
    assert runs == {"run_units": [3, 7, 1], "run_durations": [3, 2, 1], "run_starts": [0.0, 0.06, 0.1]}
    assert run_lengths(np.array([], dtype=int), 0.02)["run_units"] == []


@pytest.mark.parametrize("name", ["mfcc", "logmel"])
def test_chunked_spectral_features_match_one_pass(name):
    from synth import speech_like
    from unitvox.units import features

    chosen = f"tokenize.features.extractor={name}"
    config = _config(chosen).tokenize.features
    samples = speech_like(7.3)
    extractor = features.build_extractor(config, 16000)
    whole = features.extract(extractor, samples, config)
    chunked = features.extract(extractor, samples, _config(
        chosen, "tokenize.features.chunk_seconds=2", "tokenize.features.overlap_seconds=0.5").tokenize.features)
    assert whole.shape == chunked.shape == (len(samples) // 320, extractor.dim)
    assert np.allclose(whole, chunked, atol=1e-3)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    """A tiny wav2vec2 with the group-norm front end of wav2vec2-base (one chunk per forward)."""
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-wav2vec2"))


def test_ssl_extractor_through_from_pretrained(prepared_run, tmp_path, tiny_wav2vec2):
    store = _copy(prepared_run, tmp_path)
    config = _config("tokenize.features.extractor=ssl", f"tokenize.features.model={tiny_wav2vec2}",
                     "tokenize.features.layer=2", "tokenize.features.chunk_seconds=4")
    run_stage(config, store, "tokenize")
    codebook = Codebook.load(store, CODEBOOK)
    assert codebook.fingerprint["extractor"] == "ssl"
    assert codebook.fingerprint["model"] == str(tiny_wav2vec2)
    assert codebook.fingerprint["layer"] == 2 and codebook.centroids.shape == (20, 32)
    first = next(store.read_jsonl(UNITS))
    assert abs(len(first["units"]) - first["duration"] / 0.02) <= 1


def test_ssl_layer_beyond_the_model_is_a_config_error(tiny_wav2vec2):
    from unitvox.config import ConfigError
    from unitvox.units.features import build_extractor

    config = _config("tokenize.features.extractor=ssl", f"tokenize.features.model={tiny_wav2vec2}",
                     "tokenize.features.layer=9").tokenize.features
    with pytest.raises(ConfigError, match="tokenize.features.layer: 9, but .* has 3 layers"):
        build_extractor(config, 16000)
    missing = _config("tokenize.features.extractor=ssl", "tokenize.features.model=/nowhere/model").tokenize.features
    with pytest.raises(ConfigError, match="tokenize.features.model: cannot load '/nowhere/model'"):
        build_extractor(missing, 16000)


def test_codebook_from_other_features_is_refused(prepared_run, tmp_path):
    from unitvox.stages import Context
    from unitvox.units.kmeans import CodebookMismatch

    store = _copy(prepared_run, tmp_path)
    run_stage(_config("tokenize.features.extractor=mfcc"), store, "tokenize")
    with pytest.raises(CodebookMismatch, match="extractor: codebook 'mfcc', features 'logmel'"):
        assign(Context(_config("tokenize.features.extractor=logmel"), store))


def test_killed_assign_shard_resumes_to_identical_output(prepared_run, tmp_path):
    reference = _copy(prepared_run, tmp_path, "reference")
    config = _config("tokenize.shards=1")
    run_stage(config, reference, "tokenize")

    store = _copy(prepared_run, tmp_path, "killed")
    for phase in ("sample", "fit"):
        run_stage(config, store, "tokenize", phase=phase)
    total = sum(1 for _ in store.read_jsonl("prepare/manifest.jsonl"))
    argv = [sys.executable, "-m", "unitvox", "tokenize", "--config", "jobs/demo.yaml", "--run", store.uri,
            "--set", "tokenize.kmeans.k=20", "--set", "tokenize.kmeans.sample_frames=4000",
            "--set", "tokenize.shards=1", "--phase", "assign", "--shard-index", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = store.local_root / PARTS
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.json"))) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    done_before = len(list(parts.glob("*.json")))
    assert process.returncode == -signal.SIGKILL, "the shard must be killed mid-way for this test to mean anything"
    assert 3 <= done_before < total

    rerun = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert f"resumed: {done_before}" in rerun.stdout or f"resumed: {done_before - 1}" in rerun.stdout
    run_stage(config, store, "tokenize", phase="merge")
    assert store.read_bytes(UNITS) == reference.read_bytes(UNITS)


def test_assign_reuses_the_sampled_features_with_identical_units(prepared_run, tmp_path, tiny_wav2vec2, monkeypatch):
    """The ssl sample's features are kept for assign: the same units as extracting again, and no encoder load."""
    from unitvox.layout import TOKENIZE_SAMPLE
    from unitvox.stages import tokenize

    config = _config("tokenize.features.extractor=ssl", f"tokenize.features.model={tiny_wav2vec2}",
                     "tokenize.features.layer=2", "tokenize.shards=2")
    runs = {}
    for name in ("reused", "extracted"):
        store = runs[name] = _copy(prepared_run, tmp_path, name)
        for phase in ("sample", "fit"):
            for shard in [Shard(i, 2) for i in range(2)] if phase == "sample" else [None]:
                run_stage(config, store, "tokenize", phase=phase, shard=shard)
        cached = [key for key in store.list(f"{TOKENIZE_SAMPLE}/") if key.endswith(".npy")]
        assert cached, "the sample phase keeps the ssl features of its segments"
        if name == "extracted":
            for key in cached:
                store.delete(key)
    with monkeypatch.context() as patched:
        # Every segment of the demo corpus is in the sample, so assign never needs the encoder.
        patched.setattr(tokenize, "_extractor", lambda context: pytest.fail("assign built the extractor"))
        for index in range(2):
            run_stage(config, runs["reused"], "tokenize", phase="assign", shard=Shard(index, 2))
    for index in range(2):
        run_stage(config, runs["extracted"], "tokenize", phase="assign", shard=Shard(index, 2))
    for store in runs.values():
        run_stage(config, store, "tokenize", phase="merge")
        assert not [key for key in store.list(f"{TOKENIZE_SAMPLE}/") if key.endswith(".npy")], "merge drops the cache"
    assert runs["reused"].read_bytes(UNITS) == runs["extracted"].read_bytes(UNITS)


@pytest.fixture(scope="module")
def batchable_wav2vec2(tmp_path_factory):
    """A tiny wav2vec2 with a per-frame layer-norm front end (as XLSR-53): its chunks share padded forwards."""
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-wav2vec2-layer"), front_end_norm="layer")


def _ssl(model, *overrides):
    """The ssl extractor with a sample of every segment, so assign re-extracts in the sample's groups."""
    return _config("tokenize.features.extractor=ssl", f"tokenize.features.model={model}", "tokenize.features.layer=2",
                   "tokenize.kmeans.sample_max_seconds=1000000", *overrides)


def _phase_by_phase(config, store, shards, *, drop_cache=False):
    """Every phase and shard in its own run_stage call (as separate processes run them: nothing reused)."""
    from unitvox.layout import TOKENIZE_SAMPLE

    for phase in ("sample", "fit", "assign", "merge"):
        if phase == "assign" and drop_cache:
            for key in [key for key in store.list(f"{TOKENIZE_SAMPLE}/") if key.endswith(".npy")]:
                store.delete(key)
        for shard in [Shard(i, shards) for i in range(shards)] if phase in ("sample", "assign") else [None]:
            run_stage(config, store, "tokenize", phase=phase, shard=shard)


def _counting(monkeypatch):
    """Extractor builds and chunks per encoder forward, counted from here on; batching as on a GPU."""
    from unitvox.units import features

    monkeypatch.setattr(features, "_batching_pays", lambda device: True)
    counts = {"built": 0, "forwards": []}
    build, forward = features.build_extractor, features.SslExtractor.extract_batch

    def counted_build(*arguments):
        counts["built"] += 1
        return build(*arguments)

    def counted_forward(extractor, chunks):
        counts["forwards"].append(len(chunks))
        return forward(extractor, chunks)

    monkeypatch.setattr(features, "build_extractor", counted_build)
    monkeypatch.setattr(features.SslExtractor, "extract_batch", counted_forward)
    return counts


def test_sharded_ssl_units_are_the_same_with_and_without_reuse_and_cache(prepared_run, tmp_path, batchable_wav2vec2,
                                                                        monkeypatch):
    """One run_stage call reusing one encoder over 2 shards and every phase, batched, with the sample's
    cache, writes the bytes that 3 shards in separate calls, re-extracting in assign, write."""
    reused, separate = _copy(prepared_run, tmp_path, "reused"), _copy(prepared_run, tmp_path, "separate")
    counts = _counting(monkeypatch)
    run_stage(_ssl(batchable_wav2vec2, "tokenize.shards=2", "tokenize.features.batch_seconds=20"), reused, "tokenize")
    assert counts["built"] == 1, "one encoder for both shards of sample and assign"
    assert max(counts["forwards"]) > 1, "segments share forwards"
    counts["built"] = 0
    _phase_by_phase(_ssl(batchable_wav2vec2, "tokenize.shards=3", "tokenize.features.batch_seconds=20"), separate, 3,
                    drop_cache=True)
    assert counts["built"] == 3 + 3, "each sample shard and, with no cache, each assign shard built its own"
    assert reused.read_bytes(UNITS) == separate.read_bytes(UNITS)
    assert reused.read_bytes(f"{CODEBOOK}/centroids.npy") == separate.read_bytes(f"{CODEBOOK}/centroids.npy")


def test_batched_ssl_units_match_one_segment_at_a_time(prepared_run, tmp_path, batchable_wav2vec2, monkeypatch):
    """Batching changes features only within float tolerance: the same codebook to that tolerance, and
    units that differ at most where a frame sits on a border between two centroids."""
    batched, alone = _copy(prepared_run, tmp_path, "batched"), _copy(prepared_run, tmp_path, "alone")
    counts = _counting(monkeypatch)
    _phase_by_phase(_ssl(batchable_wav2vec2, "tokenize.shards=2", "tokenize.features.batch_seconds=20"), batched, 2)
    assert max(counts["forwards"]) > 1
    counts["forwards"].clear()
    _phase_by_phase(_ssl(batchable_wav2vec2, "tokenize.shards=2", "tokenize.features.batch_seconds=0"), alone, 2,
                    drop_cache=True)
    assert set(counts["forwards"]) == {1}
    one, other = Codebook.load(batched, CODEBOOK), Codebook.load(alone, CODEBOOK)
    np.testing.assert_allclose(one.centroids, other.centroids, atol=1e-3)
    rows = list(zip(batched.read_jsonl(UNITS), alone.read_jsonl(UNITS)))
    assert [a["id"] for a, _ in rows] == [b["id"] for _, b in rows]
    units = [(np.array(a["units"]), np.array(b["units"])) for a, b in rows]
    assert all(len(a) == len(b) for a, b in units)
    agreeing = sum(int((a == b).sum()) for a, b in units) / sum(len(a) for a, _ in units)
    assert agreeing >= 0.999
