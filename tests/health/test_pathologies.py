"""Planted pathologies in real (tiny) training runs: the monitor names each one; a normal run stays healthy.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/health/test_pathologies.py -q
"""

from __future__ import annotations

import pytest
import torch

from tiny_training import HIFIGAN_DEMO, NO_SPEAKER
from unitvox.health.monitor import SIGNALS
from unitvox.prometheus import MemorySink
from unitvox.prometheus.training import series
from unitvox.errors import Unhealthy
from unitvox.vocoder import checkpoint as ckpt

LATEST = "train/checkpoints/latest.pt"


def _latest_report(trainer) -> dict:
    return trainer.store.read_json("train/health/latest.json")


@pytest.fixture
def normal_run(make_trainer):
    sink = MemorySink()
    trainer = make_trainer(*HIFIGAN_DEMO, "train.max_steps=30", "train.generator_warmup_steps=10", "train.health.every_steps=10",
                           sink=sink)
    trainer.run()
    return trainer, sink


def test_normal_short_run_is_healthy_at_every_check(normal_run):
    trainer, sink = normal_run
    reports = [trainer.store.read_json(f"train/health/step_{step:08d}.json") for step in (10, 20, 30)]
    assert [report["status"] for report in reports] == ["healthy"] * 3, [r["reasons"] for r in reports]
    last = reports[-1]
    assert set(last["signals"]) == set(SIGNALS)
    # The figures behind the verdict: norms per network, scores per discriminator, balance shares.
    assert {"grad_norm/generator", "grad_norm/mpd", "grad_norm/mrd", "param_norm/generator", "param_norm/mpd",
            "param_norm/mrd", "score_gap/mpd", "score_gap/mrd", "share/mel"} <= set(last["figures"])
    assert last["signals"]["speaker_similarity"]["value"] is not None  # the demo conditions on speakers
    assert _latest_report(trainer)["step"] == 30
    assert sink.get("train_health_status") == 0
    assert sink.get("train_health_signal", signal="discriminator_dominance") == 0
    assert sink.get("train_grad_norm", network="mpd") > 0
    assert sink.get("train_discriminator_score", network="mrd", side="generated") is not None
    assert sink.get("stage_items_done", shard="0") == 30 and sink.get("stage_items_planned", shard="0") == 30
    # Every figure a step logs reaches Prometheus as a catalogue metric (the sink refuses any other).
    log_only = {"step", "epoch", "time"}
    steps = [row for row in trainer.state.log if "validation/mel" not in row]
    assert all(series(key) is not None for row in steps for key in row if key not in log_only)
    # The last step's validation (it is always validated) reaches Prometheus as its own gauge.
    validations = [row for row in trainer.state.log if "validation/mel" in row]
    assert validations[-1]["step"] == 30
    assert sink.get("train_validation_mel_loss") == pytest.approx(validations[-1]["validation/mel"])


def test_discriminator_learning_rate_far_too_high_is_dominance(make_trainer):
    # 20x the base learning rate for the discriminators against the base rate for the generator.
    trainer = make_trainer(*HIFIGAN_DEMO, "train.max_steps=60", "train.generator_warmup_steps=0", "train.lr_generator=0.0002",
                           "train.lr_discriminator=0.004", "train.health.every_steps=60", *NO_SPEAKER)
    trainer.run()
    report = _latest_report(trainer)
    assert report["status"] == "warning", report["reasons"]
    assert "discriminator_dominance" in report["reasons"]
    assert report["signals"]["discriminator_dominance"]["value"] >= 0.8
    assert "mpd" in report["signals"]["discriminator_dominance"]["detail"]


def test_generator_forced_to_a_constant_output_is_mode_collapse(make_trainer):
    trainer = make_trainer(*HIFIGAN_DEMO, "train.max_steps=24", "train.generator_warmup_steps=4", "train.health.every_steps=12")
    trainer.run()
    assert _latest_report(trainer)["status"] == "healthy"
    pattern = 0.1 * torch.randn(1, 1, 1, generator=torch.Generator().manual_seed(0))
    weight = next(trainer.state.generator.parameters())

    def constant(units, speaker=None):
        # The same waveform whatever the units or the speaker: one mode for every input. It stays in
        # the graph of the generator's weights (times 1 + 0 * w), as a collapsed generator's output does.
        length = units.shape[1] * trainer.settings.generator.hop_samples
        wave = (pattern * torch.sin(torch.arange(length) * 0.05)).expand(units.shape[0], 1, length)
        return wave * (1 + 0 * weight.sum())

    trainer.state.generator.forward = constant
    trainer.settings.max_steps = 36
    with pytest.raises(Unhealthy, match="mode_collapse"):
        trainer.run()
    report = _latest_report(trainer)
    assert report["status"] == "critical" and report["reasons"][0] == "mode_collapse"
    assert report["signals"]["mode_collapse"]["value"] < 0.01


def test_learning_rate_that_makes_gradients_explode_is_critical_and_stops_training(make_trainer):
    trainer = make_trainer(*HIFIGAN_DEMO, "train.max_steps=12", "train.generator_warmup_steps=4", "train.lr_generator=1.0",
                           "train.lr_discriminator=1.0", "train.health.every_steps=4", "train.checkpoint_every=4")
    with pytest.raises(Unhealthy) as stopped:
        trainer.run()
    report = _latest_report(trainer)
    assert report["status"] == "critical"
    assert "exploding_gradients" in report["reasons"]
    assert report["signals"]["exploding_gradients"]["severity"] == "critical"
    assert "exploding_gradients" in str(stopped.value) and "stop_on_critical" in str(stopped.value)
    # The state at the check is kept for diagnosis; latest.pt stays the last checked-good state.
    step = report["step"]
    assert trainer.store.exists(f"train/checkpoints/critical_step_{step:08d}.pt")
    assert ckpt.load(trainer.store, LATEST)["counters"]["step"] < step


def test_nan_in_a_batch_is_non_finite_and_the_last_good_checkpoint_is_kept(make_trainer):
    trainer = make_trainer(*HIFIGAN_DEMO, "train.max_steps=8", "train.generator_warmup_steps=1", "train.health.every_steps=2",
                           "train.checkpoint_every=2")
    batches = trainer._batches

    def poisoned():
        for batch in batches():
            if trainer.state.step == 3:  # the fourth step's batch
                batch["audio"][0, 100] = float("nan")
            yield batch

    trainer._batches = poisoned
    with pytest.raises(Unhealthy, match="non_finite"):
        trainer.run()
    report = _latest_report(trainer)
    assert report["status"] == "critical" and report["step"] == 4
    assert report["reasons"][0] == "non_finite"
    assert "loss/mel" in report["signals"]["non_finite"]["detail"]
    kept = ckpt.load(trainer.store, LATEST)
    assert kept["counters"]["step"] == 2
    assert all(torch.isfinite(tensor).all() for tensor in kept["generator"].values())
    log = list(trainer.store.read_jsonl("train/training_log.jsonl"))
    assert log[-1]["step"] == 4, "the log of the failing steps is written for diagnosis"


def test_a_loss_weight_1000_times_too_large_is_a_balance_warning(make_trainer):
    trainer = make_trainer(*HIFIGAN_DEMO, "train.max_steps=8", "train.generator_warmup_steps=2", "train.lambdas.mel=45000",
                           "train.health.every_steps=8")
    trainer.run()
    report = _latest_report(trainer)
    assert report["status"] == "warning", report["reasons"]
    assert "loss_balance" in report["reasons"]
    assert report["signals"]["loss_balance"]["value"] > 0.999
    assert "train.lambdas.mel" in report["signals"]["loss_balance"]["detail"]
