"""Reproducible outputs: prepare, tokenize and evaluate give the same bytes for any shard count and runner.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/stages/test_reproducible.py

Each stage runs the way the local runner and Kubernetes run it (one phase at a time, a shard per call,
shards finishing in any order) and, for tokenize, through `unitvox pipeline`'s own subprocesses too.
"""

from __future__ import annotations

import shutil

import pytest

from unitvox.config import load, to_yaml
from unitvox.layout import (
    CODEBOOK_CENTROIDS, CODEBOOK_FINGERPRINT, EVALUATE_METRICS, MANIFEST, TOKENIZE_SAMPLE, UNITS, success,
)
from unitvox.stages import Shard, phases, run_stage
from unitvox.store import LocalStore

pytestmark = pytest.mark.e2e

SMALL = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000"]
# A vocoder trained two steps, scored without a speaker model (as tests/stages/test_evaluate.py does).
TRAINED = [*SMALL, "train.segment_seconds=0.25", "train.batch_size=4", "train.max_steps=2",
           "train.generator_warmup_steps=1", "train.validate_every=2", "train.validation_items=3",
           "train.sample_every=1000", "evaluate.speaker_embedder=mfcc_stats", "train.speaker.enabled=false",
           "train.generator.speaker_embedding_dim=0", "evaluate.gates.unit_match_min=null",
           "evaluate.gates.cer_max=null", "evaluate.gates.dnsmos_overall_min=null"]
OUTPUTS = (CODEBOOK_CENTROIDS, CODEBOOK_FINGERPRINT, UNITS)


def _copy(source, target) -> LocalStore:
    shutil.copytree(source, target)
    return LocalStore(str(target))


def _by_phases(config, store, stage: str, count: int, *, reverse: bool = False) -> None:
    """Every phase of `stage` as separate calls, `count` shards for the sharded ones, as the runners do."""
    for phase in phases(stage):
        shards = [Shard(i, count) for i in range(count)] if phase.sharded else [None]
        for shard in reversed(shards) if reverse else shards:
            run_stage(config, store, stage, phase=phase.name, shard=shard)


def _outputs(store: LocalStore, keys=OUTPUTS) -> dict[str, bytes]:
    return {key: store.read_bytes(key) for key in keys}


def test_prepare_manifest_does_not_depend_on_the_shard_count(speech_corpus, tmp_path):
    one, three = LocalStore(str(tmp_path / "one")), LocalStore(str(tmp_path / "three"))
    run_stage(load("jobs/demo.yaml", [f"prepare.input={speech_corpus}", "prepare.shards=1"]), one, "prepare")
    _by_phases(load("jobs/demo.yaml", [f"prepare.input={speech_corpus}", "prepare.shards=3"]), three, "prepare", 3,
               reverse=True)
    assert one.read_bytes(MANIFEST) == three.read_bytes(MANIFEST)


def test_tokenize_outputs_do_not_depend_on_shards_or_runner(prepared_run, tmp_path):
    direct = _copy(prepared_run, tmp_path / "direct")
    run_stage(load("jobs/demo.yaml", [*SMALL, "tokenize.shards=1"]), direct, "tokenize")
    expected = _outputs(direct)

    two = _copy(prepared_run, tmp_path / "two")
    _by_phases(load("jobs/demo.yaml", [*SMALL, "tokenize.shards=2"]), two, "tokenize", 2, reverse=True)
    assert _outputs(two) == expected

    # Three shards in a run that still holds a two-shard sample of the same data (an earlier run).
    three = _copy(prepared_run, tmp_path / "three")
    config = load("jobs/demo.yaml", [*SMALL, "tokenize.shards=3"])
    for index in range(2):
        run_stage(config, three, "tokenize", phase="sample", shard=Shard(index, 2))
    _by_phases(config, three, "tokenize", 3)
    assert _outputs(three) == expected

    # A runner that passed another --shard-count to the sample phase than the config's shards.
    passed = _copy(prepared_run, tmp_path / "passed")
    for index in range(2):
        run_stage(config, passed, "tokenize", phase="sample", shard=Shard(index, 2))
    for phase in ("fit", "assign", "merge"):
        run_stage(config, passed, "tokenize", phase=phase, shard=Shard(0, 1) if phase == "assign" else None)
    assert _outputs(passed) == expected


def test_tokenize_through_the_pipeline_matches_a_direct_run(prepared_run, tmp_path):
    from unitvox.controller.local import run_pipeline

    direct = _copy(prepared_run, tmp_path / "direct")
    run_stage(load("jobs/demo.yaml", [*SMALL, "tokenize.shards=1"]), direct, "tokenize")
    piped = _copy(prepared_run, tmp_path / "piped")
    config = load("jobs/demo.yaml", [*SMALL, "tokenize.shards=2", "pipeline.workers=2"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(to_yaml(config))
    run_pipeline(config, piped, config_uri=str(config_file), stages=["tokenize"], echo=lambda *_: None)
    assert _outputs(piped) == _outputs(direct)


def test_a_sample_of_other_data_is_not_reused(prepared_run, tmp_path):
    """The sample is named by the manifest it came from: a rerun of prepare on other data samples afresh."""
    store = _copy(prepared_run, tmp_path / "run")
    config = load("jobs/demo.yaml", [*SMALL, "tokenize.shards=1"])
    run_stage(config, store, "tokenize", phase="sample")
    before = sorted(store.list(f"{TOKENIZE_SAMPLE}/"))
    record = store.read_json(success("prepare"))
    record["outputs"][MANIFEST]["sha256"] = "0" * 64  # as if prepare had made another manifest
    store.write_json(success("prepare"), record)
    run_stage(config, store, "tokenize", phase="sample")
    assert len(sorted(store.list(f"{TOKENIZE_SAMPLE}/"))) == 2 * len(before)


@pytest.fixture(scope="module")
def trained_run(tokenized_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(tokenized_run, root)
    run_stage(load("jobs/demo.yaml", TRAINED), LocalStore(str(root)), "train")
    return root


def test_evaluate_metrics_do_not_depend_on_the_shard_count(trained_run, tmp_path):
    one = _copy(trained_run, tmp_path / "one")
    run_stage(load("jobs/demo.yaml", [*TRAINED, "evaluate.shards=1"]), one, "evaluate")
    two = _copy(trained_run, tmp_path / "two")
    _by_phases(load("jobs/demo.yaml", [*TRAINED, "evaluate.shards=2"]), two, "evaluate", 2, reverse=True)
    assert one.read_bytes(EVALUATE_METRICS) == two.read_bytes(EVALUATE_METRICS)
