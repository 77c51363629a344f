"""`unitvox diagnose training`: health over time, plots, discriminator AUC and loss balance of a saved run.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/diagnostics/training/test_training_diagnosis.py -q
"""

from __future__ import annotations

import json

import pytest

from tiny_training import SHRINK, poison
from unitvox.cli import main
from unitvox.config import load, to_yaml
from unitvox.diagnostics.diagnosis import write_diagnosis
from unitvox.diagnostics.training.training_diagnosis import _auc_finding, diagnose_training
from unitvox.errors import IncompleteError, Unhealthy

PNG = b"\x89PNG"
STEPS = ["train.max_steps=8", "train.generator_warmup_steps=2", "train.health.every_steps=4"]


def _trained(make_trainer, *overrides: str):
    trainer = make_trainer(*STEPS, *overrides)
    trainer.run()
    trainer.store.write_text("config.yaml", to_yaml(trainer.config))
    return trainer


def test_a_healthy_run_gets_every_part_of_the_diagnosis(make_trainer):
    trainer = _trained(make_trainer)
    diagnosis = diagnose_training(trainer.config, trainer.store)
    assert diagnosis.status == "ok", diagnosis.findings
    assert diagnosis.verdict.startswith("healthy at step 8")
    details = diagnosis.details
    assert details["health"]["status"] == "healthy" and details["probed_step"] == 8
    assert [point["step"] for point in details["timeline"]][-1] == 8
    aucs = {found["discriminator"]: found for found in details["discriminator_auc"]}
    assert set(aucs) == {"mpd", "mrd"}
    assert all(0.0 <= found["auc"] <= 1.0 and found["items"] == 2 for found in aucs.values())
    balance = {row["term"]: row for row in details["loss_balance"]}
    # The tiny config conditions on speakers with a contrastive term: four weighted terms.
    assert set(balance) == {"mel", "adversarial", "feature_matching", "contrastive"}
    assert sum(row["loss_share"] for row in balance.values()) == pytest.approx(1.0)
    assert sum(row["gradient_share"] for row in balance.values()) == pytest.approx(1.0)
    assert all(row["gradient_norm"] > 0 for row in balance.values()), balance
    assert set(diagnosis.figures) == {"curves.png", "status.png"}
    assert all(png.startswith(PNG) for png in diagnosis.figures.values())
    markdown = diagnosis.markdown(trainer.store.uri)
    assert "## Loss balance" in markdown and "## Discriminator AUC on held-out audio" in markdown


def test_a_loss_term_that_drives_the_gradient_is_named(make_trainer):
    """Weights are not part of the checkpoint: the balance a config would strike is measured on the saved models."""
    trainer = _trained(make_trainer)
    config = load("jobs/demo.yaml", [*SHRINK, *STEPS, "train.lambdas.mel=1000000"])
    diagnosis = diagnose_training(config, trainer.store)
    mel = next(row for row in diagnosis.details["loss_balance"] if row["term"] == "mel")
    assert mel["gradient_share"] > 0.999
    assert diagnosis.status == "warning"
    assert any("check train.lambdas.mel" in finding and "of the generator's gradient" in finding
               for finding in diagnosis.findings)


def test_a_run_stopped_on_nan_is_a_problem_and_the_timeline_shows_when(make_trainer):
    trainer = make_trainer("train.max_steps=12", "train.generator_warmup_steps=1", "train.health.every_steps=2",
                           "train.checkpoint_every=2", "diagnose.training.every_rows=2")
    poison(trainer, at_step=5)
    with pytest.raises(Unhealthy):
        trainer.run()
    diagnosis = diagnose_training(trainer.config, trainer.store)
    assert diagnosis.status == "problem"
    assert diagnosis.findings[0].startswith("non_finite: NaN or infinity in loss/")
    statuses = [point["status"] for point in diagnosis.details["timeline"]]
    assert statuses[0] == "healthy" and statuses[-1] == "critical"
    assert any(finding.startswith("health over time: healthy from step") and "critical from step 6" in finding
               for finding in diagnosis.findings)


def test_before_any_checkpoint_the_log_is_judged_alone(make_trainer):
    trainer = _trained(make_trainer)
    for key in trainer.store.list("train/checkpoints"):
        trainer.store.delete(key)
    diagnosis = diagnose_training(trainer.config, trainer.store)
    assert "discriminator_auc" not in diagnosis.details
    assert any(finding.startswith("no model probe:") and "run train first" in finding
               for finding in diagnosis.findings)


def test_without_a_log_it_says_to_train_first(tokenized_run):
    from unitvox.store import LocalStore

    with pytest.raises(IncompleteError, match="no training log"):
        diagnose_training(load("jobs/demo.yaml", SHRINK), LocalStore(str(tokenized_run)))


@pytest.mark.parametrize("auc, real, generated, dominates, words", [
    (1.0, 0.95, 0.05, True, "dominates"),
    (1.0, 0.6, 0.4, False, "still guides the generator"),
    (0.55, 0.5, 0.48, False, "0.5: cannot tell"),
])
def test_a_high_auc_dominates_only_with_scores_far_apart(auc, real, generated, dominates, words):
    found = {"discriminator": "mpd", "auc": auc, "real_mean_score": real, "generated_mean_score": generated,
             "items": 32}
    finding, flagged = _auc_finding(found, dominance_auc=0.98, score_gap=0.8)
    assert flagged is dominates and words in finding and "coarse" not in finding


def test_the_command_writes_the_report_and_prints_the_verdict(make_trainer, capsys):
    trainer = _trained(make_trainer)
    config_file = trainer.store.local_root / "config.yaml"
    assert main(["diagnose", "training", "--config", str(config_file), "--run", trainer.store.uri, "--log-only"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("training: OK: healthy at step 8")
    assert "report: " in printed and "diagnose/training/report.md" in printed
    report = json.loads(trainer.store.read_text("diagnose/training/report.json"))
    assert report["status"] == "ok" and report["skipped"] == "--log-only"
    assert report["figures"] == ["curves.png", "status.png"]
    assert trainer.store.read_bytes("diagnose/training/status.png").startswith(PNG)
    # Written again, the report replaces the old one.
    assert write_diagnosis(trainer.store, diagnose_training(trainer.config, trainer.store, probe_model=False))
