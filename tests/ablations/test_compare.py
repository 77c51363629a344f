"""The comparison on planted variant results: best variant, what matters and which way, noise, what is missing.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/ablations/test_compare.py -q
"""

import json

import pytest

from unitvox.ablations.ablation_report import write_comparison
from unitvox.ablations.compare import build_comparison, training_metrics
from unitvox.ablations.plan import plan_ablation
from unitvox.ablations.suite import parse_suite
from unitvox.config import load
from unitvox.store import LocalStore

SUITE = """name: planted
{compare}
variants:
  baseline: {{}}
  worse:
    train.batch_size: 2
  noise:
    train.batch_size: 3
  better:
    train.batch_size: 5
  stale:
    train.batch_size: 6
  running:
    train.batch_size: 7
  unhealthy:
    train.batch_size: 9
"""


def _plan(compare=""):
    return plan_ablation(load("jobs/demo.yaml"), parse_suite(SUITE.format(compare=compare), "planted.yaml"))


def _plant(root, plan, name, validation, *, snr_db=None, config_hash=None, finished=True, health="healthy"):
    """A variant's area as training and evaluation leave it: log, _SUCCESS.json, metrics.json, health."""
    area = root.child(f"ablations/{name}")
    rows = [{"step": step, "loss/mel": 3.0 - step / 10, "loss/gen_total": 100.0} for step in range(1, 11)]
    rows += [{"step": 5 * (i + 1), "validation/mel": value, "validation/improved": True}
             for i, value in enumerate(validation)]
    area.write_jsonl("train/training_log.jsonl", rows)
    if finished:
        area.write_json("train/_SUCCESS.json", {"config_hash": config_hash or plan.configs[name].stage_hash("train")})
    if snr_db is not None:
        area.write_json("evaluate/metrics.json", {"summary": {"snr_db_mean": snr_db, "mcd_mean": 8.0,
                                                              "unit_match_mean": float("nan")}})
    reasons = ["non_finite"] if health == "critical" else []
    area.write_json("train/health/latest.json", {"status": health, "reasons": reasons})


@pytest.fixture
def planted(tmp_path):
    plan, root = _plan(), LocalStore(str(tmp_path / "run"))
    _plant(root, plan, "baseline", [2.0, 1.0], snr_db=-0.1)
    _plant(root, plan, "worse", [2.5, 2.0], snr_db=-2.6)
    _plant(root, plan, "noise", [2.0, 1.03], snr_db=0.3)
    _plant(root, plan, "better", [1.0, 0.6])
    _plant(root, plan, "stale", [0.1], config_hash="an-older-config")
    _plant(root, plan, "running", [0.2], finished=False)
    _plant(root, plan, "unhealthy", [0.2], finished=False, health="critical")  # stopped unhealthy at its first check
    return plan, root


def test_the_comparison_names_the_best_variant_and_what_matters(planted):
    comparison = build_comparison(*planted)
    assert comparison.best == "better"
    judged = {record.name: (record.verdict, record.direction) for record in comparison.variants if record.finished}
    assert judged == {"baseline": ("baseline", None), "worse": ("matters", "worse"), "noise": ("within noise", "worse"),
                      "better": ("matters", "better")}
    assert {record.name: record.status for record in comparison.missing} == {
        "stale": "trained with another config", "running": "training not finished",
        "unhealthy": "stopped by the health monitor: non_finite"}
    text = "\n".join(comparison.findings)
    assert "Best variant: better (validation/mel_best 0.6)." in text
    assert "worse matters: validation/mel_best 2 is 100.0% worse than baseline's 1 (train.batch_size=2)." in text
    assert "better matters: validation/mel_best 0.6 is 40.0% better than baseline's 1" in text
    assert "noise does not measurably matter: validation/mel_best 1.03 is within the noise threshold" in text
    assert ("Not compared: stale (trained with another config), running (training not finished), "
            "unhealthy (stopped by the health monitor: non_finite).") in text


def test_metrics_hold_best_and_final_validation_final_losses_and_evaluation(planted):
    records = {record.name: record for record in build_comparison(*planted).variants}
    worse = records["worse"]
    assert worse.metrics["validation/mel_best"] == worse.metrics["validation/mel_final"] == 2.0
    assert worse.metrics["loss/mel"] == pytest.approx(sum(3.0 - s / 10 for s in range(6, 11)) / 5)  # last 5 rows
    assert worse.metrics["evaluate/snr_db"] == -2.6 and "evaluate/unit_match" not in worse.metrics  # NaN left out
    assert worse.differences["evaluate/snr_db"] == {"absolute": pytest.approx(-2.5), "relative": None}  # dB: no share
    assert worse.differences["validation/mel_best"]["relative"] == pytest.approx(1.0)
    assert worse.steps == 10 and worse.health == {"status": "healthy", "reasons": []}
    assert "evaluate/snr_db" not in records["better"].metrics


def test_a_key_metric_in_decibels_uses_the_decibel_threshold(tmp_path):
    plan, root = _plan("compare: {key_metric: evaluate/snr_db, noise_threshold_db: 1.0}"), LocalStore(str(tmp_path))
    _plant(root, plan, "baseline", [1.0], snr_db=-0.1)
    _plant(root, plan, "worse", [1.0], snr_db=-2.6)
    _plant(root, plan, "noise", [1.0], snr_db=0.3)
    comparison = build_comparison(plan, root)
    assert comparison.best == "noise"
    text = "\n".join(comparison.findings)
    assert "higher is better" in text and "under 1 dB counted as noise" in text
    assert "worse matters: evaluate/snr_db -2.6 is 2.50 dB worse than baseline's -0.1" in text
    assert "noise does not measurably matter: evaluate/snr_db 0.3 is within the noise threshold of baseline's " \
           "-0.1 (+0.40 dB;" in text


def test_without_a_finished_baseline_nothing_is_judged(tmp_path):
    plan, root = _plan(), LocalStore(str(tmp_path))
    _plant(root, plan, "worse", [2.0])
    comparison = build_comparison(plan, root)
    assert comparison.best == "worse"
    assert [r.verdict for r in comparison.variants if r.finished] == ["unknown"]
    assert "No differences: the baseline variant baseline has not finished." in comparison.findings


def test_the_written_report_has_the_table_the_curves_and_the_missing(planted, tmp_path):
    plan, root = planted
    write_comparison(plan, root)
    document = json.loads((tmp_path / "run/ablations/comparison.json").read_text())
    assert document["best_variant"] == "better" and document["missing"]["running"] == "training not finished"
    assert document["settings"]["key_metric"] == "validation/mel_best"
    report = (tmp_path / "run/ablations/report.md").read_text()
    assert "| worse | `train.batch_size=2` | 10 | 2 (+100.0%) | 2 (+100.0%) |" in report
    assert "| -2.6 (-2.50 dB) |" in report and "matters (worse)" in report
    assert "- running: training not finished (`train.batch_size=7`)" in report
    assert "![training and validation curves of every variant](curves.png)" in report
    assert (tmp_path / "run/ablations/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_metrics_skip_non_finite_values_and_keep_the_curves():
    rows = [{"step": 1, "loss/mel": float("nan")}, {"step": 2, "loss/mel": 2.0, "grad_norm/generator": 3.0},
            {"step": 2, "validation/mel": float("inf")}]
    metrics, curves = training_metrics(rows, final_log_rows=5)
    assert metrics == {"loss/mel": 2.0}
    assert curves == {"loss/mel": [(2, 2.0)]}
