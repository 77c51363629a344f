"""bpe stage: a model, motifs with spans, counts, durations and coverage, from a tokenized run."""

import shutil

from unitvox.config import load
from unitvox.stages import run_stage
from unitvox.layout import BPE_MODEL as MODEL, BPE_MOTIFS as MOTIFS
from unitvox.store import LocalStore


def test_bpe_stage_writes_model_and_motifs(prepared_run, tmp_path):
    shutil.copytree(prepared_run, tmp_path / "run")
    store = LocalStore(str(tmp_path / "run"))
    config = load("jobs/demo.yaml", ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000",
                                     "bpe.vocab_size=100000", "bpe.top_motifs=10"])
    run_stage(config, store, "tokenize")
    result = run_stage(config, store, "bpe")
    assert result.status == "ran"
    motifs = store.read_json(MOTIFS)
    assert motifs["vocab_size_requested"] == 100000
    assert motifs["vocab_size"] < 100000 and "lowered" in motifs["notes"][0]
    assert store.exists(MODEL)
    assert len(motifs["motifs"]) == 10
    counts = [m["count"] for m in motifs["motifs"]]
    assert counts == sorted(counts, reverse=True)
    for motif in motifs["motifs"]:
        assert motif["length"] == len(motif["units"]) >= 2
        assert all(0 <= u < 20 for u in motif["units"])
        assert motif["mean_duration_seconds"] >= 0.02 * motif["length"]
        assert 0 < motif["coverage"] < 1
    assert sum(int(k) * v for k, v in motifs["piece_length_histogram"].items()) == motifs["units"]
    assert run_stage(config, store, "bpe").status == "skipped"
