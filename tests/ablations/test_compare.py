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
    rows += _validation_rows(validation, 5)
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


GAN_SUITE = """name: gan
variants:
  baseline: {}
  no_gan:
    train.lambdas.adversarial: 0.0
    train.lambdas.feature_matching: 0.0
"""


def _gan_plan(warmup_steps=0):
    config = load("jobs/demo.yaml", [f"train.generator_warmup_steps={warmup_steps}"])
    return plan_ablation(config, parse_suite(GAN_SUITE, "gan.yaml"))


def _validation_rows(validation, every, adversarial_from=None):
    """Validation rows every `every` steps, flagged improved as the trainer flags them: a new lowest error,
    counted afresh from the first validation after `adversarial_from` (None: a log from before that rule)."""
    rows, best = [], float("inf")
    for index, value in enumerate(validation):
        step = every * (index + 1)
        if adversarial_from is not None and step > adversarial_from and step - every <= adversarial_from:
            best = float("inf")
        rows.append({"step": step, "validation/mel": value, "validation/improved": value < best})
        best = min(best, value)
    return rows


def _plant_evaluated(root, plan, name, validation, summary, every=5, adversarial_from=None):
    """A finished variant whose validation ran every `every` steps and whose evaluation has `summary`."""
    area = root.child(f"ablations/{name}")
    rows = _validation_rows(validation, every, adversarial_from)
    area.write_jsonl("train/training_log.jsonl", rows)
    area.write_json("train/_SUCCESS.json", {"config_hash": plan.configs[name].stage_hash("train")})
    area.write_json("evaluate/metrics.json", {"summary": summary})


def test_the_default_judged_metric_is_intelligibility_with_validation_mel_beside_it(tmp_path):
    plan, root = _gan_plan(), LocalStore(str(tmp_path))
    _plant_evaluated(root, plan, "baseline", [2.0, 1.0], {"cer_mean": 0.4, "wer_mean": 0.9, "dnsmos_overall_mean": 2.0})
    _plant_evaluated(root, plan, "no_gan", [2.0, 0.9], {"cer_mean": 0.6, "wer_mean": 1.0, "dnsmos_overall_mean": 1.5})
    comparison = write_comparison(plan, root)
    assert comparison.settings.key_metric == "evaluate/cer" and comparison.best == "baseline"
    assert "no_gan matters: evaluate/cer 0.6 is 50.0% worse than baseline's 0.4" in "\n".join(comparison.findings)
    assert "validation/mel_best is a secondary column" in comparison.findings[0]
    report = (tmp_path / "ablations/report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| variant |"))
    assert header.startswith("| variant | changes | steps | evaluate/cer | validation/mel_best |")


def test_naturalness_is_judged_when_no_variant_has_intelligibility(tmp_path):
    plan, root = _gan_plan(), LocalStore(str(tmp_path))
    _plant_evaluated(root, plan, "baseline", [1.0], {"dnsmos_overall_mean": 2.0, "cer_mean": 0.5})
    _plant_evaluated(root, plan, "no_gan", [1.0], {"dnsmos_overall_mean": 3.0})
    comparison = build_comparison(plan, root)
    assert comparison.settings.key_metric == "evaluate/dnsmos_overall", "cer is not in every variant"
    assert comparison.best == "no_gan"
    assert "higher is better" in comparison.findings[0]


def test_a_suite_key_metric_still_wins(tmp_path):
    plan = plan_ablation(load("jobs/demo.yaml"), parse_suite(GAN_SUITE + "compare: {key_metric: validation/mel_best}\n",
                                                             "gan.yaml"))
    root = LocalStore(str(tmp_path))
    _plant_evaluated(root, plan, "baseline", [1.0], {"cer_mean": 0.4})
    _plant_evaluated(root, plan, "no_gan", [1.0], {"cer_mean": 0.6})
    assert build_comparison(plan, root).settings.key_metric == "validation/mel_best"


def test_best_checkpoints_from_the_adversarial_phase_can_be_judged(tmp_path):
    """The same validation errors as below, logged by a trainer that keeps best.pt to the adversarial phase."""
    plan, root = _gan_plan(100), LocalStore(str(tmp_path))
    _plant_evaluated(root, plan, "baseline", [1.3, 1.115, 1.2, 1.3], {}, every=50, adversarial_from=100)
    _plant_evaluated(root, plan, "no_gan", [1.3, 1.115, 1.2, 1.25], {}, every=45, adversarial_from=100)
    comparison = build_comparison(plan, root)
    records = {record.name: record for record in comparison.variants}
    assert (records["baseline"].best_step, records["no_gan"].best_step) == (150, 135)
    assert records["no_gan"].verdict != "unknown"
    assert "generator-only warm-up" not in "\n".join(comparison.findings)


def test_best_checkpoints_from_the_warm_up_cannot_see_the_gan(tmp_path):
    """Issue 13: both variants' best validation mel 1.115 came before any adversarial step (logs written
    before best.pt was kept to the adversarial phase)."""
    plan, root = _gan_plan(100), LocalStore(str(tmp_path))
    _plant_evaluated(root, plan, "baseline", [1.3, 1.115, 1.2, 1.3], {}, every=50)  # best at step 100
    _plant_evaluated(root, plan, "no_gan", [1.3, 1.115, 1.2, 1.25], {}, every=45)   # best at step 90
    comparison = build_comparison(plan, root)
    no_gan = next(record for record in comparison.variants if record.name == "no_gan")
    assert (no_gan.best_step, no_gan.warmup_steps, no_gan.verdict) == (90, 100, "unknown")
    text = "\n".join(comparison.findings)
    assert ("no_gan: cannot judge, both best checkpoints come from the generator-only warm-up (steps 100, 90 <= "
            "warm-up 100): the comparison cannot see the GAN") in text
    assert "does not measurably matter" not in text
    assert json.loads(json.dumps(no_gan.to_json()))["best_step"] == 90


def test_a_best_checkpoint_after_the_warm_up_is_judged(tmp_path):
    plan, root = _gan_plan(100), LocalStore(str(tmp_path))
    _plant_evaluated(root, plan, "baseline", [1.3, 1.2, 1.115], {}, every=50)  # best at step 150: after the warm-up
    _plant_evaluated(root, plan, "no_gan", [1.3, 1.115, 1.2], {}, every=50)
    no_gan = next(record for record in build_comparison(plan, root).variants if record.name == "no_gan")
    assert no_gan.verdict == "within noise"
