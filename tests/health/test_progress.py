"""A saved run still improving when it stopped is told from one that converged, with the figures.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/health/test_progress.py -q
"""

from __future__ import annotations

import pytest

from unitvox.config import ConfigError, load
from unitvox.config.health import HealthConfig
from unitvox.diagnostics.training.training_diagnosis import diagnose_run
from unitvox.health.progress import CONVERGED, STILL_IMPROVING, TOO_FEW_CHECKS, judge_progress
from unitvox.health.signals import HEALTHY, WARNING
from unitvox.layout import EVALUATE_METRICS, TRAINING_LOG
from unitvox.store import LocalStore

FALLING = [1.40, 1.30, 1.21, 1.16, 1.11]
FLAT = [1.40, 1.20, 1.115, 1.114, 1.115]


def _log(validation: list[float], every: int = 100) -> list[dict]:
    """Training rows every 10 steps (a steady mel loss) and a validation row every `every` steps."""
    rows = []
    for step in range(10, every * len(validation) + 1, 10):
        rows.append({"step": step, "loss/mel": 1.0, "grad_norm/generator": 1.0})
        if step % every == 0:
            rows.append({"step": step, "validation/mel": validation[step // every - 1], "validation/improved": True})
    return rows


def _evaluation(wer: float, dnsmos: float) -> dict:
    return {"passed": True, "summary": {"wer_mean": wer, "dnsmos_overall_mean": dnsmos, "stoi_mean": None},
            "original": {"summary": {"wer_mean": 0.05, "dnsmos_overall_mean": 3.15, "stoi_mean": 1.0}}}


def test_a_falling_curve_is_still_improving_with_the_figures():
    progress = judge_progress(_log(FALLING), HealthConfig())
    assert progress.state == STILL_IMPROVING and progress.severity == WARNING
    assert progress.detail.startswith("still improving: validation mel fell 8% over the last 3 checks (1.21 -> 1.11")
    assert progress.detail.endswith("train longer")
    assert progress.figures["progress/validation_mel_fall"] == pytest.approx((1.21 - 1.11) / 1.21)


def test_a_flat_curve_has_converged():
    progress = judge_progress(_log(FLAT), HealthConfig())
    assert progress.state == CONVERGED and progress.severity == HEALTHY
    assert "converged: validation mel changed +0.0% over the last 3 checks (1.11 -> 1.11" in progress.detail


def test_the_threshold_and_the_number_of_checks_are_config():
    assert judge_progress(_log(FALLING), HealthConfig(still_improving_fall=0.1)).state == CONVERGED
    assert judge_progress(_log(FLAT), HealthConfig(progress_checks=5)).state == STILL_IMPROVING, "1.40 -> 1.115"
    assert judge_progress(_log(FALLING), HealthConfig(), step=200).state == TOO_FEW_CHECKS, "two checks by step 200"
    with pytest.raises(ConfigError, match="train.health.progress_checks"):
        load("jobs/demo.yaml", ["train.health.progress_checks=1"])


def test_without_validation_checks_it_cannot_say():
    progress = judge_progress(_log([]), HealthConfig())
    assert progress.state == TOO_FEW_CHECKS and progress.severity == HEALTHY
    assert "0 validation checks" in progress.detail


def test_the_evaluation_is_set_beside_the_originals():
    progress = judge_progress(_log(FLAT), HealthConfig(), _evaluation(0.95, 1.66))
    assert progress.detail.endswith("evaluation against the original's: WER 0.95 (original 0.05), "
                                    "DNSMOS OVRL 1.66 (original 3.15)"), "STOI not scored (null) is left out"
    assert progress.figures["evaluation/wer"] == 0.95 and progress.figures["evaluation_original/wer"] == 0.05


@pytest.mark.parametrize("validation, status, words", [
    (FALLING, "warning", "still improving: validation mel fell 8%"),
    (FLAT, "healthy", "converged: validation mel changed"),
])
def test_the_saved_run_verdict_says_which(tmp_path, validation, status, words):
    store = LocalStore(str(tmp_path))
    store.write_jsonl(TRAINING_LOG, _log(validation))
    store.write_json(EVALUATE_METRICS, _evaluation(0.95, 1.66))
    report = diagnose_run(store, config=load("jobs/demo.yaml"), checkpoint=None)
    assert report.reasons == [], "no signal is unhealthy: progress alone sets the status"
    assert report.status_name == status
    assert words in report.summary() and "WER 0.95 (original 0.05)" in report.summary()
    assert report.to_dict()["progress"]["state"] == (STILL_IMPROVING if status == "warning" else CONVERGED)
