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


def _unit_mean_durations(rows, train_ids):
    """Each unit's mean run length over the training items: the best timing that ignores context."""
    lengths = {}
    for units in (row["units"] for row in rows if row["id"] in train_ids):
        start = 0
        for index in range(1, len(units) + 1):
            if index == len(units) or units[index] != units[start]:
                lengths.setdefault(units[start], []).append(index - start)
                start = index
    overall = np.mean([length for runs in lengths.values() for length in runs])
    return {unit: float(np.mean(runs)) for unit, runs in lengths.items()}, float(overall)


def test_run_units_without_durations_are_timed_by_the_predictor(deduplicated_run, bundle, tmp_path):
    assert (bundle / "duration_predictor.safetensors").exists()
    assert json.loads((bundle / "model.json").read_text())["units"] == "deduplicated"
    split = json.loads((deduplicated_run / "train" / "split.json").read_text())
    rows = _rows(deduplicated_run / UNITS)
    frames = {row["id"]: row["units"] for row in rows if row["id"] in split["validation"]}
    runs = tmp_path / "runs.jsonl"
    collapsed = {}
    with runs.open("w") as out:
        for segment, units in frames.items():
            collapsed[segment] = [u for i, u in enumerate(units) if i == 0 or units[i - 1] != u]
            out.write(json.dumps({"id": segment, "units": collapsed[segment], "deduplicated": True}) + "\n")
    wavs = tmp_path / "wavs"
    assert main(["vocode", "--model", str(bundle), "--units", str(runs), "--out", str(wavs)]) == 0
    hop = 320
    generated = {segment: soundfile.info(wavs / f"{segment}.wav").frames / hop for segment in frames}
    ratios = {segment: generated[segment] / len(units) for segment, units in frames.items()}
    assert all(0.5 < ratio < 2 for ratio in ratios.values()), ratios
    # How well timing can be known from the units alone depends on the corpus (a fast speaker's runs
    # are short whatever their units), so the bar is a context-free predictor on the same items: each
    # unit's mean training run length. The trained predictor must time the held-out items as well.
    means, overall = _unit_mean_durations(rows, set(split["train"]))
    baseline = {segment: sum(means.get(unit, overall) for unit in collapsed[segment]) / len(units)
                for segment, units in frames.items()}

    def total_error(lengths):
        return abs(sum(lengths[s] * len(frames[s]) for s in frames) / sum(len(u) for u in frames.values()) - 1)

    def item_error(lengths):
        return float(np.mean([abs(lengths[s] - 1) for s in frames]))

    tolerance = 0.05
    assert total_error(ratios) <= total_error(baseline) + tolerance, (ratios, baseline)
    assert item_error(ratios) <= item_error(baseline) + tolerance, (ratios, baseline)
