"""Diagnosing a saved run (what `unitvox diagnose training` calls), and the train stage stopping on critical health.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/diagnostics/training/test_diagnose_run.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tiny_training import HIFIGAN_DEMO, SHRINK, poison
from unitvox.config import to_yaml
from unitvox.diagnostics.training.training_diagnosis import diagnose_run
from unitvox.errors import IncompleteError, Unhealthy
from unitvox.store import LocalStore
from unitvox.vocoder import checkpoint as ckpt


@pytest.fixture
def poisoned_run(make_trainer):
    """A run whose fourth batch carried a NaN: stopped at the check of step 4, latest.pt from step 2."""
    trainer = make_trainer("train.max_steps=8", "train.generator_warmup_steps=1", "train.health.every_steps=2",
                           "train.checkpoint_every=2")
    poison(trainer, at_step=3)
    with pytest.raises(Unhealthy):
        trainer.run()
    trainer.store.write_text("config.yaml", to_yaml(trainer.config))
    return trainer.store


def test_a_saved_healthy_run_gets_the_live_verdict(make_trainer):
    trainer = make_trainer("train.max_steps=8", "train.generator_warmup_steps=2", "train.health.every_steps=4")
    trainer.run()
    trainer.store.write_text("config.yaml", to_yaml(trainer.config))
    live = trainer.store.read_json("train/health/latest.json")
    saved = diagnose_run(trainer.store)
    assert saved.step == live["step"] == 8
    assert saved.to_dict()["signals"] == live["signals"]
    checkpoint = ckpt.load(trainer.store, "train/checkpoints/latest.pt")
    assert set(saved.figures) >= {"param_norm/generator", "param_norm/mpd", "param_norm/mrd",
                                  "param_norm/speaker_encoder"}
    assert saved.figures["param_norm/generator"] == pytest.approx(live["figures"]["param_norm/generator"], rel=1e-5)
    assert checkpoint["counters"]["step"] == 8


def test_a_saved_run_stopped_on_nan(poisoned_run):
    report = diagnose_run(poisoned_run)
    assert report.status_name == "critical" and report.reasons[0] == "non_finite"
    assert report.step == 4, "the log written at the stop runs past latest.pt"
    assert diagnose_run(poisoned_run, step=2).status_name == "healthy"
    evidence = diagnose_run(poisoned_run, checkpoint="train/checkpoints/critical_step_00000004.pt", step=2)
    assert evidence.reasons == ["non_finite"], "NaN weights in the checkpoint are reason enough"
    assert "param_norm/generator" in evidence.signals["non_finite"].detail
    diagnose_run(poisoned_run, step=2, write=True)
    assert poisoned_run.read_json("train/health/latest.json")["step"] == 2


def test_a_run_without_a_log_cannot_be_diagnosed(tmp_path):
    store = LocalStore(str(tmp_path))
    store.write_text("config.yaml", "train: {max_steps: 3}\n")
    with pytest.raises(IncompleteError, match="no training log"):
        diagnose_run(store)


@pytest.mark.e2e
def test_the_train_stage_exits_4_naming_the_reasons(tokenized_run, tmp_path):
    shutil.copytree(tokenized_run, tmp_path / "run")
    argv = [sys.executable, "-m", "unitvox", "train", "--config", "jobs/demo.yaml", "--run", str(tmp_path / "run")]
    for override in [*SHRINK, *HIFIGAN_DEMO, "train.max_steps=12", "train.generator_warmup_steps=4", "train.lr_generator=1.0",
                     "train.lr_discriminator=1.0", "train.health.every_steps=4", "train.checkpoint_every=4"]:
        argv += ["--set", override]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 4, completed.stderr[-2000:]
    assert "unitvox: training unhealthy: training health is critical at step 8" in completed.stderr
    assert "exploding_gradients" in completed.stderr
    assert "train/checkpoints/latest.pt is kept" in completed.stderr
    assert not (tmp_path / "run" / "train" / "_SUCCESS.json").exists()
