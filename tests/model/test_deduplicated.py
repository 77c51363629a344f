"""A `train.units: deduplicated` run: the duration predictor trains, is reported, ships in the bundle and times
run units that come without durations."""

import json
import shutil

import numpy as np
import pytest
import soundfile

from tiny_training import NO_SPEAKER, SHRINK
from unitvox.cli import main
from unitvox.layout import EVALUATE_METRICS, MANIFEST, TRAINING_LOG, UNITS
from unitvox.store import LocalStore
from unitvox.vocoder import checkpoint as ckpt

DEDUPLICATED = ["train.units=deduplicated", "train.max_steps=200", "train.generator_warmup_steps=200",
                "train.validate_every=100", "train.checkpoint_every=100", "train.validation_items=3"]
# The evaluation's cheap listeners only: this test is about the duration figures.
EVALUATE = ["evaluate.speaker_embedder=mfcc_stats", "evaluate.asr.engine=none", "evaluate.dnsmos=false",
            "evaluate.distortions=false", "evaluate.shards=1", "evaluate.gates.cer_max=null",
            "evaluate.gates.dnsmos_overall_min=null", "evaluate.gates.unit_match_min=null",
            "evaluate.gates.length_ratio_min=null"]


def _config(*overrides):
    from unitvox.config import load

    return load("jobs/demo.yaml", [*SHRINK, *NO_SPEAKER, *DEDUPLICATED, *EVALUATE, *overrides])


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def deduplicated_run(tokenized_run, tmp_path_factory):
    from unitvox.stages import run_stage

    root = tmp_path_factory.mktemp("deduplicated") / "run"
    shutil.copytree(tokenized_run, root)
    store = LocalStore(str(root))
    for stage in ("train", "evaluate"):
        run_stage(_config(), store, stage)
    return root


@pytest.fixture(scope="module")
def bundle(deduplicated_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("deduplicated-bundle") / "model"
    assert main(["export", "--run", str(deduplicated_run), "--out", str(out)]) == 0
    return out


def test_the_duration_loss_and_error_are_in_the_training_log(deduplicated_run):
    log = _rows(deduplicated_run / TRAINING_LOG)
    losses = [row["loss/duration"] for row in log if "loss/duration" in row]
    assert len(losses) >= 10 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the predictor learns
    validations = [row for row in log if "validation/mel" in row]
    assert validations and all("validation/duration_mae_frames" in row for row in validations)
    assert all(row["validation/duration_mae_frames"] >= 0 for row in validations)
    assert all("grad_norm/duration_predictor" in row for row in log if "loss/duration" in row)
    # Its own learning rate, decayed with the generator's.
    rates = [(row["lr/generator"], row["lr/duration_predictor"]) for row in log if "loss/duration" in row]
    generator_lr, predictor_lr = _config().train.lr_generator, _config().train.duration_predictor.lr
    assert rates[0][1] == pytest.approx(predictor_lr * rates[0][0] / generator_lr)


def test_evaluation_reports_the_predicted_durations(deduplicated_run):
    metrics = json.loads((deduplicated_run / EVALUATE_METRICS).read_text())
    rows = metrics["utterances"]
    assert rows and all(row["duration_error_frames"] >= 0 for row in rows)
    for row in rows:  # the resynthesis itself keeps the recording's own timing
        assert row["length_ratio"] == pytest.approx(1.0, abs=0.01)
        assert 0.5 < row["predicted_length_ratio"] < 2.0
    summary = json.dumps(metrics["summary"])
    assert "duration_error_frames" in summary and "predicted_length_ratio" in summary


def test_run_units_without_durations_are_timed_by_the_predictor(deduplicated_run, bundle, tmp_path):
    assert (bundle / "duration_predictor.safetensors").exists()
    assert json.loads((bundle / "model.json").read_text())["units"] == "deduplicated"
    held_out = json.loads((deduplicated_run / "train" / "split.json").read_text())["validation"]
    frames = {row["id"]: row["units"] for row in _rows(deduplicated_run / UNITS) if row["id"] in held_out}
    runs = tmp_path / "runs.jsonl"
    with runs.open("w") as out:
        for segment, units in frames.items():
            collapsed = [u for i, u in enumerate(units) if i == 0 or units[i - 1] != u]
            out.write(json.dumps({"id": segment, "units": collapsed, "deduplicated": True}) + "\n")
    wavs = tmp_path / "wavs"
    assert main(["vocode", "--model", str(bundle), "--units", str(runs), "--out", str(wavs)]) == 0
    hop = 320
    ratios = {segment: soundfile.info(wavs / f"{segment}.wav").frames / (len(units) * hop)
              for segment, units in frames.items()}
    # Calibrated on the training items' total length: over the held-out ones within 10%, each within 25%.
    total = sum(soundfile.info(wavs / f"{s}.wav").frames for s in frames) / sum(len(u) * hop for u in frames.values())
    assert abs(total - 1) < 0.10, ratios
    assert all(abs(ratio - 1) < 0.25 for ratio in ratios.values()), ratios


def test_given_durations_and_the_runs_own_timing_are_kept(deduplicated_run, bundle, tmp_path):
    speaker_folder = next((deduplicated_run / "prepare" / "audio").iterdir())
    encoded = tmp_path / "runs.jsonl"
    assert main(["encode", "--model", str(bundle), str(speaker_folder), "--out", str(encoded), "--deduplicate"]) == 0
    row = _rows(encoded)[0]
    assert row["deduplicated"] is True and len(row["durations"]) == len(row["units"])
    wavs = tmp_path / "wavs"
    assert main(["vocode", "--model", str(bundle), "--units", str(encoded), "--out", str(wavs)]) == 0
    assert soundfile.info(wavs / f"{row['id']}.wav").frames == sum(row["durations"]) * 320
    # resynthesize keeps the recording's own timing even on a deduplicated model
    audio = next(r["audio"] for r in _rows(deduplicated_run / MANIFEST) if r["id"] == row["id"])
    again = tmp_path / "again"
    assert main(["resynthesize", "--model", str(bundle), str(deduplicated_run / audio), "--out", str(again)]) == 0
    assert soundfile.info(again / f"{row['id']}.wav").frames == sum(row["durations"]) * 320


def test_a_frame_unit_checkpoint_is_refused_by_a_deduplicated_config(deduplicated_run):
    store = LocalStore(str(deduplicated_run))
    codebook = store.read_json("tokenize/codebook/codebook.json")
    frames = ckpt.describe_model(_config("train.units=frames"), codebook)
    saved = ckpt.load(store, "train/checkpoints/latest.pt")["model"]
    with pytest.raises(ckpt.CheckpointMismatch, match=r"deduplicated units, the config trains one of frames units"):
        ckpt.check_matches(saved, frames, "latest.pt")
    with pytest.raises(ckpt.CheckpointMismatch, match="train.units"):
        ckpt.check_matches(frames, saved, "latest.pt")


def test_run_units_on_a_frame_unit_model_need_durations(exported, tmp_path, capsys):
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps({"id": "a", "units": [1, 2, 3], "deduplicated": True}) + "\n"
                    + json.dumps({"id": "b", "units": [1, 2, 3], "durations": [2, 1, 3]}) + "\n")
    speaker = tmp_path / "voice.wav"
    soundfile.write(speaker, np.random.default_rng(0).uniform(-0.3, 0.3, 16000), 16000)
    wavs = tmp_path / "wavs"
    assert main(["vocode", "--model", str(exported), "--units", str(runs), "--out", str(wavs),
                 "--speaker", str(speaker)]) == 2
    err = capsys.readouterr().err
    assert "runs.jsonl:1" in err and "no duration predictor" in err
    assert not (wavs / "a.wav").exists()
    assert soundfile.info(wavs / "b.wav").frames == 6 * 320
