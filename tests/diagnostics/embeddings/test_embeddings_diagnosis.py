"""`diagnose embeddings`: planted encoders that do and do not separate speakers, on real speech and its resynthesis.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/diagnostics/embeddings/test_embeddings_diagnosis.py -q
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter

import numpy as np
import pytest
import soundfile

from tiny_training import SHRINK
from unitvox.cli import main
from unitvox.config import ConfigError, load
from unitvox.diagnostics.embeddings.embedding_sources import build_embedder
from unitvox.diagnostics.embeddings.embeddings_diagnosis import diagnose_embeddings
from unitvox.diagnostics.diagnosis import write_diagnosis
from unitvox.evaluation.speaker import SilentInputError
from unitvox.layout import MANIFEST
from unitvox.store import LocalStore
from unitvox.vocoder.dataset import AudioReader

DIMENSIONS = 16


def fingerprint(wave: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(wave, dtype=np.float32).tobytes()).digest()


class PlantedEncoder:
    """Embeds a segment as `shared` times a direction common to all, plus `speaker` times its speaker's
    direction, plus `noise` times noise seeded by the audio (so every run of a test sees the same embeddings).

    It recognises the run's segments by their samples, so it embeds real audio as the diagnosis reads it.
    """

    name = "planted"

    def __init__(self, store: LocalStore, *, shared: float, speaker: float, noise: float):
        reader, rng = AudioReader(store), np.random.default_rng(7)
        rows = list(store.read_jsonl(MANIFEST))
        self.directions = {row["speaker"]: rng.standard_normal(DIMENSIONS) for row in rows}
        self.shared = rng.standard_normal(DIMENSIONS)
        self.speaker_of = {fingerprint(reader.read(row["audio"])): row["speaker"] for row in rows}
        self.weights = (shared, speaker, noise)

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        if np.max(np.abs(wave)) < 1e-5:
            raise SilentInputError("planted: silent")
        key = fingerprint(wave)
        noise = np.random.default_rng(int.from_bytes(key[:8], "big")).standard_normal(DIMENSIONS)
        shared, speaker, scale = self.weights
        vector = shared * self.shared + speaker * self.directions[self.speaker_of[key]] + scale * noise
        return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture
def prepared_copy(prepared_run, tmp_path):
    shutil.copytree(prepared_run, tmp_path / "run")
    return LocalStore(str(tmp_path / "run"))


def manifest(store: LocalStore) -> list[dict]:
    return list(store.read_jsonl(MANIFEST))


def test_an_encoder_that_separates_speakers_is_ok(prepared_copy):
    encoder = PlantedEncoder(prepared_copy, shared=0.0, speaker=1.0, noise=0.3)
    rows = manifest(prepared_copy)
    (prepared_copy.local_root / rows[0]["audio"]).write_bytes(b"not audio at all")
    soundfile.write(prepared_copy.local_root / rows[1]["audio"], np.zeros(16000, dtype=np.float32), 16000)
    config = load("jobs/demo.yaml", ["diagnose.embeddings.max_items=0"])
    diagnosis = diagnose_embeddings(config, prepared_copy, embedder=encoder)
    real = diagnosis.details["real"]
    assert diagnosis.status == "ok", diagnosis.verdict
    assert diagnosis.verdict.startswith("speakers are separated")
    assert real["items"] == len(rows) - 2 and real["speakers"] == len({row["speaker"] for row in rows})
    assert real["separation"] > 0.5 and real["silhouette"] > 0.5 and real["auc"] > 0.99
    assert real["same_speaker"]["mean"] > 0.8 and real["same_speaker"]["q05"] > real["different_speaker"]["q95"]
    assert diagnosis.details["skipped"]["real"]["counts"] == {"unreadable": 1, "silent": 1}
    assert diagnosis.details["items"]["source"] == "sample", "no split yet: a sample of the manifest"
    assert any("2 real items skipped (1 silent, 1 unreadable" in finding for finding in diagnosis.findings)
    assert any(finding.startswith("least separated speaker pairs: ") for finding in diagnosis.findings)
    assert diagnosis.details["generated"] is None and "no vocoder checkpoint" in diagnosis.details["generated_audio"]
    assert set(diagnosis.figures) == {"similarity.png", "pca.png", "tsne.png"}
    points = len(rows) - 2
    assert diagnosis.details["projections"]["tsne_perplexity"] == pytest.approx(
        min(config.diagnose.embeddings.perplexity, (points - 1) / 3))


def test_an_encoder_blind_to_speakers_is_a_problem(tokenized_run, tmp_path):
    shutil.copytree(tokenized_run, tmp_path / "run")
    store = LocalStore(str(tmp_path / "run"))
    first_of_each, per_speaker = {}, Counter()
    for row in manifest(store):
        first_of_each.setdefault(row["speaker"], row["id"])
        per_speaker[row["speaker"]] += 1
    speakers = len(first_of_each)
    # Three items per speaker where the corpus has them: the validation item plus two topped up.
    budget = sum(min(3, count) for count in per_speaker.values())
    assert budget > speakers, "the corpus needs speakers with more than one segment"
    store.write_json("train/split.json", {"train": [], "validation": sorted(first_of_each.values())})
    config = load("jobs/demo.yaml", [f"diagnose.embeddings.max_items={budget}", "diagnose.embeddings.perplexity=30"])
    diagnosis = diagnose_embeddings(config, store, embedder=PlantedEncoder(store, shared=1.0, speaker=0.0, noise=0.5))
    real = diagnosis.details["real"]
    assert diagnosis.status == "problem"
    assert diagnosis.verdict.startswith("speakers are not separated: same-speaker similarity ")
    assert abs(real["separation"]) < 0.1 and real["silhouette"] <= 0.0 and real["auc"] < 0.7
    worst = real["pairs"][0]
    assert f"least separated speaker pairs: {worst['speakers'][0]} & {worst['speakers'][1]}" in diagnosis.findings[1]
    items = diagnosis.details["items"]
    topped_up = budget - speakers
    assert items == {"source": "validation+training", "chosen": budget, "validation": speakers,
                     "topped_up": topped_up, "speakers": speakers,
                     "per_speaker": {speaker: min(3, per_speaker[speaker]) for speaker in sorted(first_of_each)}}
    assert any(f"{topped_up} training segments were added to its {speakers}" in finding
               for finding in diagnosis.findings)
    # t-SNE's perplexity must stay below the number of points: lowered to (n - 1) / 3 when 30 is too high.
    lowered = (budget - 1) / 3
    assert diagnosis.details["projections"]["tsne_perplexity"] == pytest.approx(min(30.0, lowered))
    if lowered < 30:
        assert any(f"perplexity lowered from 30 to {lowered:.2f}" in finding for finding in diagnosis.findings)


def test_an_encoder_that_orders_pairs_with_a_small_gap_gets_a_warning(prepared_copy):
    """Like mfcc_stats: every embedding near one direction, speakers apart by a little but consistently."""
    encoder = PlantedEncoder(prepared_copy, shared=1.0, speaker=0.15, noise=0.02)
    diagnosis = diagnose_embeddings(load("jobs/demo.yaml"), prepared_copy, embedder=encoder)
    real = diagnosis.details["real"]
    assert real["separation"] < 0.1 and real["auc"] > 0.99 and real["silhouette"] > 0
    assert diagnosis.status == "warning" and diagnosis.verdict.startswith("speakers are ordered but close")
    assert "this embedder compresses similarities" in diagnosis.findings[1]


def test_one_speaker_or_single_items_cannot_be_judged(prepared_copy):
    rows = manifest(prepared_copy)
    speaker = rows[0]["speaker"]
    prepared_copy.write_jsonl(MANIFEST, [row for row in rows if row["speaker"] == speaker])
    config = load("jobs/demo.yaml", ["diagnose.embeddings.embedder=mfcc_stats"])
    alone = diagnose_embeddings(config, prepared_copy)
    assert alone.status == "warning" and "at least two speakers are needed" in alone.verdict
    assert alone.details["real"]["silhouette"] is None and alone.details["real"]["separation"] is None

    two = [rows[0], next(row for row in rows if row["speaker"] != speaker)]
    prepared_copy.write_jsonl(MANIFEST, two)
    single = diagnose_embeddings(config, prepared_copy)
    assert single.status == "warning" and "no same-speaker pair" in single.verdict
    assert "only 2 embedded items: no PCA or t-SNE map drawn" in single.findings
    assert "pca.png" not in single.figures and "tsne.png" not in single.figures


def test_generated_audio_from_a_trained_checkpoint(make_trainer):
    trainer = make_trainer("train.max_steps=4")
    trainer.run()
    store = trainer.store
    config = load("jobs/demo.yaml", [*SHRINK, "train.max_steps=4", "evaluate.checkpoint=latest",
                                     "diagnose.embeddings.embedder=mfcc_stats", "diagnose.embeddings.max_items=8"])
    diagnosis = diagnose_embeddings(config, store)
    write_diagnosis(store, diagnosis)
    report = json.loads((store.local_root / "diagnose/embeddings/report.json").read_text())
    assert report["items"]["source"] == "validation+training" and report["items"]["chosen"] == 8
    assert report["real"]["items"] == 8
    assert report["generated"]["items"] == 8 and report["generated"]["same_speaker"]["count"] > 0
    assert report["voice"]["items"] == 8 and -1.0 <= report["voice"]["own_item"] <= 1.0
    assert report["generated_audio"].startswith("resynthesised with ") and "(step 4)" in report["generated_audio"]
    assert any(finding.startswith("generated audio: 8 items") for finding in report["findings"])
    assert report["figures"] == ["pca.png", "similarity.png", "tsne.png"]
    for name in report["figures"]:
        assert (store.local_root / "diagnose/embeddings" / name).read_bytes().startswith(b"\x89PNG")

    encoder_config = load("jobs/demo.yaml", [*SHRINK, "evaluate.checkpoint=latest", "diagnose.embeddings.max_items=8",
                                             "diagnose.embeddings.embedder=checkpoint",
                                             "diagnose.embeddings.generated=false"])
    own_encoder = diagnose_embeddings(encoder_config, store)
    assert own_encoder.details["embedder"] == "checkpoint" and own_encoder.details["real"]["items"] == 8
    assert own_encoder.details["generated"] is None


def test_the_checkpoint_embedder_needs_a_trained_encoder(prepared_copy):
    config = load("jobs/demo.yaml", ["diagnose.embeddings.embedder=checkpoint"])
    with pytest.raises(ConfigError, match=r"diagnose\.embeddings\.embedder: 'checkpoint' .* run train first"):
        build_embedder(config, prepared_copy)
    unconditioned = load("jobs/demo.yaml", ["diagnose.embeddings.embedder=checkpoint", "train.speaker.enabled=false",
                                            "train.generator.speaker_embedding_dim=0"])
    with pytest.raises(ConfigError, match=r"diagnose\.embeddings\.embedder: .*train\.speaker\.enabled is false"):
        build_embedder(unconditioned, prepared_copy)


def test_the_command_prints_findings_and_writes_the_report(prepared_copy, capsys):
    run = prepared_copy.local_root
    rows = manifest(prepared_copy)
    chosen = min(12, len(rows))
    speakers = len({row["speaker"] for row in rows})
    code = main(["diagnose", "embeddings", "--config", "jobs/demo.yaml", "--run", str(run),
                 "--set", "diagnose.embeddings.embedder=mfcc_stats", "--max-items", "12"])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith("embeddings: ") and f"  - real audio: {chosen} items of {speakers} speakers" in printed
    assert f"report: {run}/diagnose/embeddings/report.md" in printed
    folder = run / "diagnose" / "embeddings"
    report = json.loads((folder / "report.json").read_text())
    assert report["kind"] == "embeddings" and report["embedder"] == "mfcc_stats" and report["items"]["chosen"] == chosen
    markdown = (folder / "report.md").read_text()
    assert "## Similarity" in markdown and "![t-SNE of the embeddings by speaker](tsne.png)" in markdown
    assert {path.name for path in folder.glob("*.png")} == {"similarity.png", "pca.png", "tsne.png"}
