"""train: a smoke run of the shipped tiny config, SIGTERM and resume, DDP on CPU, mismatched checkpoints."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from unitvox.config import load
from unitvox.stages import Context, run_stage
from unitvox.layout import LATEST_CHECKPOINT as LATEST
from unitvox.stages.train import fit
from unitvox.store import LocalStore
from unitvox.vocoder import checkpoint as ckpt

# The shipped demo config shrunk to a few steps; k matches the tokenized_run fixture.
SHRINK = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", "train.segment_seconds=0.25",
          "train.batch_size=4", "train.log_every=1", "train.validate_every=1000", "train.sample_every=1000", "train.validation_items=2"]


def _run(tokenized_run, tmp_path, name="run"):
    shutil.copytree(tokenized_run, tmp_path / name)
    return LocalStore(str(tmp_path / name))


def _config(*overrides):
    return load("jobs/demo.yaml", [*SHRINK, *overrides])


# The residual-block choice belongs to the hifigan generator (the demo's is vocos).
HIFIGAN = "train.generator.type=hifigan"


def _generator_weights(store):
    return ckpt.load(store, LATEST)["generator"]


def test_two_step_smoke_run_of_the_shipped_tiny_config(tokenized_run, tmp_path):
    store = _run(tokenized_run, tmp_path)
    result = run_stage(_config("train.max_steps=2", "train.generator_warmup_steps=1"), store, "train")
    assert result.status == "ran" and result.summary["steps"] == 2
    payload = ckpt.load(store, LATEST)
    assert payload["counters"]["step"] == 2
    assert payload["model"]["num_units"] == 20
    assert payload["model"]["generator"]["size"] == "tiny"
    assert len(payload["model"]["codebook"]["hash"]) == 64
    log = list(store.read_jsonl("train/training_log.jsonl"))
    assert log[0]["step"] == 1 and "loss/mel" in log[0] and "loss/disc" not in log[0]  # warm-up: generator only
    steps = [row for row in log if "loss/mel" in row]
    assert "loss/disc" in steps[-1] and "loss/adv_gen" in steps[-1]
    assert log[-1]["step"] == 2 and "validation/mel" in log[-1]  # the last step is validated
    assert all(torch.isfinite(torch.tensor(row["loss/gen_total"])) for row in log if "loss/gen_total" in row)
    assert run_stage(_config("train.max_steps=2", "train.generator_warmup_steps=1"), store, "train").status == "skipped"


def test_sigterm_then_resume_matches_an_uninterrupted_run(tokenized_run, tmp_path):
    overrides = ["train.max_steps=6", "train.generator_warmup_steps=2", "train.checkpoint_every=1"]
    reference = _run(tokenized_run, tmp_path, "reference")
    run_stage(_config(*overrides), reference, "train")

    store = _run(tokenized_run, tmp_path, "interrupted")
    argv = [sys.executable, "-m", "unitvox", "train", "--config", "jobs/demo.yaml", "--run", store.uri]
    for override in [*SHRINK, *overrides]:
        argv += ["--set", override]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    latest = store.local_root / LATEST
    deadline = time.time() + 300
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    stopped_at = ckpt.load(store, LATEST)["counters"]["step"]
    assert 1 <= stopped_at < 6, "SIGTERM must land mid-training for this test to mean anything"
    assert "interrupted" in stderr

    run_stage(_config(*overrides), store, "train")
    resumed, uninterrupted = _generator_weights(store), _generator_weights(reference)
    assert ckpt.load(store, LATEST)["counters"]["step"] == 6
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_two_process_ddp_on_cpu(tokenized_run, tmp_path):
    store = _run(tokenized_run, tmp_path)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "unitvox", "train", "--config", "jobs/demo.yaml", "--run-root", store.uri]
    for override in [*SHRINK, "train.max_steps=2", "train.generator_warmup_steps=1"]:
        argv += ["--set", override]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("train: ran") == 2, "both ranks must finish"
    assert store.read_json("train/_SUCCESS.json")["summary"]["steps"] == 2
    assert ckpt.load(store, LATEST)["counters"]["step"] == 2


def test_checkpoint_from_another_model_is_refused(tokenized_run, tmp_path):
    store = _run(tokenized_run, tmp_path)
    run_stage(_config(HIFIGAN, "train.max_steps=1"), store, "train")
    with pytest.raises(ckpt.CheckpointMismatch) as refused:
        fit(Context(_config(HIFIGAN, "train.max_steps=2", "train.generator.resblock=grouped",
                            "train.generator.size=custom"), store))
    message = str(refused.value)
    assert "train.generator.resblock: checkpoint 'hifigan', now 'grouped'" in message
    assert "train.generator.size: checkpoint 'tiny', now 'custom'" in message
    # Started over, such a checkpoint is refused by the model check, for the same keys.
    with pytest.raises(ckpt.CheckpointMismatch, match="generator.resblock: checkpoint 'hifigan', expected 'grouped'"):
        ckpt.load_generator_weights(store, LATEST, ckpt.describe_model(
            _config(HIFIGAN, "train.generator.resblock=grouped", "train.generator.size=custom"),
            store.read_json("tokenize/codebook/codebook.json")))


def test_checkpoint_from_another_codebook_is_refused(tokenized_run, tmp_path):
    store = _run(tokenized_run, tmp_path)
    run_stage(_config("train.max_steps=1"), store, "train")
    payload = ckpt.load(store, LATEST)
    expected = dict(payload["model"], codebook=dict(payload["model"]["codebook"], hash="0" * 64), num_units=50)
    with pytest.raises(ckpt.CheckpointMismatch, match=r"codebook\.hash: checkpoint '[0-9a-f]{64}', expected '0{64}'"):
        ckpt.load_generator_weights(store, LATEST, expected)
    with pytest.raises(ckpt.CheckpointMismatch, match="num_units: checkpoint 20, expected 50"):
        ckpt.load_generator_weights(store, LATEST, expected)


def test_early_stopping_ends_training_when_validation_stops_improving(tokenized_run, tmp_path):
    store = _run(tokenized_run, tmp_path)
    config = _config("train.max_steps=50", "train.validate_every=1", "train.early_stopping.patience=2",
                     "train.early_stopping.min_delta=1000")  # only the first validation can count as better
    result = run_stage(config, store, "train")
    assert result.summary["stopped_early"] is True
    assert result.summary["steps"] == 3
    validations = [row for row in store.read_jsonl("train/training_log.jsonl") if "validation/mel" in row]
    assert [row["validation/improved"] for row in validations] == [True, False, False]
    assert store.exists("train/checkpoints/best.pt")


def test_best_checkpoint_comes_from_the_adversarial_phase_and_the_last_step_is_validated(tokenized_run, tmp_path):
    from unitvox.layout import BEST_CHECKPOINT

    store = _run(tokenized_run, tmp_path)
    warmup, last = 4, 7
    config = _config(f"train.max_steps={last}", "train.validate_every=2", f"train.generator_warmup_steps={warmup}",
                     "train.early_stopping.min_delta=0", "train.checkpoint_every=1000")
    run_stage(config, store, "train")
    validations = [row for row in store.read_jsonl("train/training_log.jsonl") if "validation/mel" in row]
    assert [row["step"] for row in validations] == [2, 4, 6, last]  # the last step too, though not on the cadence
    first_adversarial = next(row for row in validations if row["step"] > warmup)
    # A mel-only generator's lower mel error does not keep best.pt: the adversarial phase starts its own best.
    assert first_adversarial["validation/improved"] is True
    adversarial = [row for row in validations if row["step"] > warmup]
    best = min(adversarial, key=lambda row: row["validation/mel"])
    counters = ckpt.load(store, BEST_CHECKPOINT)["counters"]
    assert counters["step"] == counters["best_step"] == best["step"]
    assert counters["best_validation"] == pytest.approx(best["validation/mel"])


def test_a_checkpoint_saved_before_best_step_was_recorded_takes_it_from_its_log(tokenized_run, tmp_path):
    from unitvox.vocoder.build import build_trainer

    store = _run(tokenized_run, tmp_path)
    config = _config("train.max_steps=4", "train.validate_every=2")
    run_stage(config, store, "train")
    payload = ckpt.load(store, LATEST)
    improved = [row["step"] for row in json.loads(payload["log"]) if row.get("validation/improved")]
    del payload["counters"]["best_step"]
    trainer = build_trainer(config, _run(tokenized_run, tmp_path, "fresh"))
    trainer.state.load_state_dict(payload)
    assert trainer.state.best_step == improved[-1]


def test_lora_adaptation_starts_from_another_run_and_trains_adapters_only(tokenized_run, tmp_path):
    base = _run(tokenized_run, tmp_path, "base")
    run_stage(_config("train.max_steps=1"), base, "train")
    initial = _generator_weights(base)
    adapted = _run(tokenized_run, tmp_path, "adapted")
    lora = ["train.generator.lora.rank=2", f"train.init_from={base.url(LATEST)}", "train.max_steps=2",
            "train.lr_generator=0.01"]
    run_stage(_config(*lora), adapted, "train")
    weights = _generator_weights(adapted)
    adapters = [name for name in weights if ".down." in name or ".up." in name]
    assert adapters, "adapter weights must be in the checkpoint"
    changed = [name for name in adapters if name.endswith(".up.weight") and weights[name].abs().sum() > 0]
    assert changed, "the adapters must have trained"
    for name, tensor in initial.items():
        same = [key for key in weights if key.replace(".base.", ".") == name]
        assert same and torch.equal(weights[same[0]], tensor), f"{name} must stay frozen"
    other = "train.generator.type=vocos" if _config().train.generator.type == "hifigan" else HIFIGAN
    with pytest.raises(ckpt.CheckpointMismatch, match=r"train\.generator\.type"):
        run_stage(_config(*lora, other), _run(tokenized_run, tmp_path, "other"), "train")


def test_the_speaker_encoder_is_clipped_with_the_generator(tokenized_run, tmp_path, monkeypatch):
    from unitvox.health import norms

    clipped = []
    original = norms.clip_gradients

    def recording(modules, limit):
        clipped.append(sorted(modules))
        return original(modules, limit)

    monkeypatch.setattr(norms, "clip_gradients", recording)
    store = _run(tokenized_run, tmp_path)
    run_stage(_config("train.max_steps=2", "train.generator_warmup_steps=1", "train.speaker.enabled=true",
                      "train.speaker.freeze_encoder=false"), store, "train")
    assert ["generator", norms.SPEAKER_ENCODER] in clipped, clipped


# Resuming: only the checkpoint line of the same config and inputs --------------------------------


def _train_argv(store, *overrides):
    argv = ["train", "--config", "jobs/demo.yaml", "--run", store.uri]
    for override in [*SHRINK, *overrides]:
        argv += ["--set", override]
    return argv


def test_a_resume_after_a_learning_rate_change_is_refused_naming_the_key(tokenized_run, tmp_path, capsys):
    from unitvox.cli import main

    store = _run(tokenized_run, tmp_path)
    run_stage(_config("train.max_steps=1"), store, "train")
    before = {key: store.sha256(key) for key in store.list("train/")}
    with pytest.raises(ckpt.ResumeRefused) as refused:
        run_stage(_config("train.max_steps=2", "train.lr_generator=0.001"), store, "train")
    message = str(refused.value)
    assert f"train.lr_generator: checkpoint {_config().train.lr_generator}, now 0.001" in message
    assert "max_steps" not in message, "raising max_steps never blocks a resume"
    assert "train.resume=fresh" in message and "--force" in message
    assert main(_train_argv(store, "train.max_steps=2", "train.lr_generator=0.001")) == 2
    assert "train.lr_generator: checkpoint" in capsys.readouterr().err
    assert {key: store.sha256(key) for key in store.list("train/")} == before, "a refusal changes nothing in train/"


def test_a_resume_after_a_new_codebook_is_refused_naming_the_input(tokenized_run, tmp_path):
    from unitvox.layout import CODEBOOK_FINGERPRINT

    store = _run(tokenized_run, tmp_path)
    run_stage(_config("train.max_steps=1"), store, "train")
    codebook = store.read_json(CODEBOOK_FINGERPRINT)
    store.write_json(CODEBOOK_FINGERPRINT, {**codebook, "hash": "0" * 64})  # as tokenize with another codebook
    with pytest.raises(ckpt.ResumeRefused) as refused:
        fit(Context(_config("train.max_steps=2"), store))
    assert f"input codebook: checkpoint '{codebook['hash']}', now '{'0' * 64}'" in str(refused.value)


def test_raising_max_steps_resumes_the_same_line(tokenized_run, tmp_path):
    store = _run(tokenized_run, tmp_path)
    run_stage(_config("train.max_steps=1", "train.generator_warmup_steps=1"), store, "train")
    lineage = ckpt.load(store, LATEST)["lineage"]
    result = run_stage(_config("train.max_steps=3", "train.generator_warmup_steps=1", "train.log_every=2",
                               "train.device=cpu"), store, "train")
    assert result.status == "ran"
    payload = ckpt.load(store, LATEST)
    assert payload["counters"]["step"] == 3 and payload["lineage"] == lineage
    steps = [row["step"] for row in store.read_jsonl("train/training_log.jsonl") if "loss/mel" in row]
    assert steps[0] == 1, "the resumed run keeps the first run's log"
    assert not list(store.list("train/checkpoints.old/"))


def test_resume_fresh_starts_over_and_keeps_the_old_checkpoints(tokenized_run, tmp_path):
    from unitvox.layout import CHECKPOINTS_ARCHIVE, TRAINING_LOG

    store = _run(tokenized_run, tmp_path)
    run_stage(_config("train.max_steps=2"), store, "train")
    old = store.sha256(LATEST)
    changed = ["train.max_steps=1", "train.lr_generator=0.001", "train.resume=fresh"]
    assert _config(*changed).stage_hash("train") == _config(*changed[:2]).stage_hash("train"), \
        "train.resume only says how to run"
    run_stage(_config(*changed), store, "train")
    archived = sorted(store.list(f"{CHECKPOINTS_ARCHIVE}/"))
    folders = {key.rsplit("/", 1)[0] for key in archived}
    assert len(folders) == 1 and re.fullmatch(rf"{CHECKPOINTS_ARCHIVE}/\d{{8}}T\d{{6}}Z", folders.pop())
    kept_latest = next(key for key in archived if key.endswith("/latest.pt"))
    assert store.sha256(kept_latest) == old and ckpt.load(store, kept_latest)["counters"]["step"] == 2
    assert any(key.endswith("/" + TRAINING_LOG.rsplit("/", 1)[-1]) for key in archived)
    payload = ckpt.load(store, LATEST)
    assert payload["counters"]["step"] == 1, "a fresh start counts from 0"
    assert payload["lineage"]["config"]["lr_generator"] == 0.001
    # The new line resumes under the same command (a preempted pod reruns it): nothing more is archived.
    run_stage(_config("train.max_steps=2", "train.lr_generator=0.001", "train.resume=fresh"), store, "train")
    assert ckpt.load(store, LATEST)["counters"]["step"] == 2
    assert sorted(store.list(f"{CHECKPOINTS_ARCHIVE}/")) == archived
