"""The health signals on crafted training logs: thresholds, severities, and what is not judged yet.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/health/test_monitor.py -q
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from unitvox.config import ConfigError, load
from unitvox.config.health import HealthConfig
from unitvox.health import norms
from unitvox.health.monitor import SIGNALS, assess, write_report
from unitvox.store import LocalStore

WEIGHTS = {"mel": 45.0, "adversarial": 1.0, "feature_matching": 2.0, "contrastive": 1.0}
CONFIG = HealthConfig(window=10, min_rows=4)


def _rows(count: int, **series) -> list[dict]:
    """Training-log rows 1..count; each keyword is a constant or a function of the step."""
    base = {"loss/mel": 1.0, "loss/adv_gen": 3.0, "loss/feature_matching": 2.0, "grad_norm/generator": 50.0}
    rows = []
    for step in range(1, count + 1):
        row = {"step": step, **base}
        for key, value in series.items():
            row[key.replace("__", "/")] = value(step) if callable(value) else value
        rows.append(row)
    return rows


def _judge(rows, config=CONFIG, **kwargs):
    return assess(rows, config, WEIGHTS, **kwargs)


def test_a_steady_log_is_healthy_and_every_signal_is_reported():
    report = _judge(_rows(20, disc_real__mpd=0.6, disc_fake__mpd=0.35, mode__spectral_variance_ratio=0.5,
                          mode__output_diversity_ratio=0.6))
    assert report.status_name == "healthy" and report.reasons == []
    assert set(report.to_dict()["signals"]) == set(SIGNALS)
    assert report.figures["score_gap/mpd"] == pytest.approx(0.25)
    assert report.figures["share/mel"] == pytest.approx(45 / (45 + 3 + 4))
    assert report.to_dict()["window"] == {"rows": 10, "first_step": 11, "last_step": 20}


def test_too_few_rows_are_not_judged():
    report = _judge(_rows(2, **{"loss__mel": math.inf}) + [{"step": 3, "validation/mel": 1.0}])
    assert report.reasons == ["non_finite"], "non_finite needs no history"
    assert report.signals["loss_divergence"].value is None
    assert "too few" in report.signals["loss_balance"].detail


def test_non_finite_names_the_figures_losses_first_and_weights_from_a_checkpoint():
    report = _judge(_rows(6, grad_norm__mpd=lambda s: math.nan if s == 5 else 1.0, loss__mel=lambda s: math.nan),
                    parameter_norms={"generator": math.inf, "mpd": 3.0})
    assert report.status_name == "critical" and report.reasons[0] == "non_finite"
    assert report.signals["non_finite"].detail.startswith("NaN or infinity in loss/mel, grad_norm/mpd")
    assert "param_norm/generator" in report.signals["non_finite"].detail
    payload = report.to_dict()
    assert payload["figures"]["param_norm/generator"] is None, "JSON has no infinity"
    json.dumps(payload, allow_nan=False)


@pytest.mark.parametrize(("norm", "severity"), [(5e4, 0), (2e5, 1), (math.inf, 2), (3e7, 2)])
def test_exploding_gradients_by_the_largest_norm_in_the_window(norm, severity):
    report = _judge(_rows(12, grad_norm__mrd=lambda step: norm if step == 11 else 2.0))
    assert report.signals["exploding_gradients"].severity == severity
    assert report.figures["grad_norm_max/mrd"] == norm


def test_vanishing_gradients_by_the_median():
    report = _judge(_rows(12, grad_norm__generator=lambda step: 1e-9 if step > 4 else 10.0))
    assert report.reasons == ["vanishing_gradients"]
    assert "generator" in report.signals["vanishing_gradients"].detail


def test_dominance_when_the_score_gap_is_near_its_ceiling():
    rows = _rows(12, disc_real__mrd=0.97, disc_fake__mrd=0.02, disc_real__mpd=0.6, disc_fake__mpd=0.4,
                 adv_gen__mrd=lambda step: 1.0 + step / 10)
    report = _judge(rows)
    assert report.reasons == ["discriminator_dominance"]
    assert report.signals["discriminator_dominance"].value == pytest.approx(0.95)
    assert report.figures["trend/adv_gen/mrd"] > 0


def test_collapse_only_after_the_discriminator_had_separated_the_two():
    blind = {"disc_real__mpd": 0.5, "disc_fake__mpd": 0.5}
    assert _judge(_rows(12, **blind)).reasons == [], "never separated: still learning"
    separated_then_blind = _rows(24, disc_real__mpd=lambda s: 0.8 if s <= 12 else 0.5,
                                 disc_fake__mpd=lambda s: 0.2 if s <= 12 else 0.51)
    report = _judge(separated_then_blind)
    assert report.reasons == ["discriminator_collapse"]
    assert report.signals["discriminator_collapse"].value == pytest.approx(-0.01)


def test_mode_collapse_is_a_fall_from_varied_outputs():
    untrained = _rows(12, mode__output_diversity_ratio=0.0, mode__spectral_variance_ratio=0.0)
    assert _judge(untrained).reasons == [], "an untrained generator's silence is not a collapse"
    falling = _rows(30, mode__output_diversity_ratio=lambda s: 0.4 if s <= 15 else 0.03,
                    mode__spectral_variance_ratio=0.5)
    assert _judge(falling).signals["mode_collapse"].severity == 1
    collapsed = _rows(30, mode__output_diversity_ratio=lambda s: 0.4 if s <= 15 else 0.0,
                      mode__spectral_variance_ratio=0.5)
    report = _judge(collapsed)
    assert report.reasons == ["mode_collapse"] and report.status_name == "critical"
    assert "spread between outputs" in report.signals["mode_collapse"].detail


@pytest.mark.parametrize(("rise", "severity"), [(1.2, 0), (2.0, 1), (4.0, 2)])
def test_divergence_against_the_lowest_windowed_mean(rise, severity):
    rows = _rows(40, loss__mel=lambda step: 1.0 if step <= 20 else rise)
    report = _judge(rows)
    assert report.signals["loss_divergence"].severity == severity
    assert report.figures["divergence_ratio"] == pytest.approx(rise)


def test_balance_flags_a_term_taking_almost_all_or_almost_none():
    assert _judge(_rows(12, loss__mel=1000.0)).reasons == ["loss_balance"]
    report = _judge(_rows(12, loss__contrastive=1e-5))
    assert report.reasons == ["loss_balance"]
    assert "contrastive takes only" in report.signals["loss_balance"].detail
    warmup = [{"step": step, "loss/mel": 1.0, "grad_norm/generator": 5.0} for step in range(1, 13)]
    assert _judge(warmup).signals["loss_balance"].value is None, "one term alone is not judged"


def test_speaker_similarity_when_conditioned():
    assert _judge(_rows(12, speaker__similarity=0.1)).reasons == ["speaker_similarity"]
    assert _judge(_rows(12)).signals["speaker_similarity"].value is None


def test_judging_as_of_an_earlier_step():
    rows = _rows(30, loss__mel=lambda step: 1.0 if step <= 20 else math.nan)
    assert _judge(rows, step=20).status_name == "healthy"
    assert _judge(rows).status_name == "critical"


def test_reports_are_written_per_check_and_as_latest(tmp_path):
    store = LocalStore(str(tmp_path))
    report = _judge(_rows(12, loss__contrastive=1e-5), step=12)
    key = write_report(store, report)
    assert key == "train/health/step_00000012.json"
    latest = store.read_json("train/health/latest.json")
    assert latest["report"] == key and latest["status"] == "warning" and latest["reasons"] == ["loss_balance"]
    assert latest["signals"]["loss_balance"]["severity"] == "warning"


def test_thresholds_are_checked_by_name():
    with pytest.raises(ConfigError, match="train.health.window"):
        load("jobs/demo.yaml", ["train.health.window=1"])
    with pytest.raises(ConfigError, match="train.health.exploding_gradient_norm: must not exceed"):
        load("jobs/demo.yaml", ["train.health.exploding_gradient_norm=1.0e+9"])
    with pytest.raises(ConfigError, match="train.health.divergence_loss"):
        load("jobs/demo.yaml", ["train.health.divergence_loss=loss/everything"])
    with pytest.raises(ConfigError, match="train.health.speaker_similarity_min: must be positive"):
        load("jobs/demo.yaml", ["train.health.speaker_similarity_min=-1"])
    assert load("jobs/base.yaml").train.health == HealthConfig(), "jobs/base.yaml lists the defaults"


def test_health_settings_do_not_change_the_train_stage_hash():
    assert load("jobs/demo.yaml", ["train.health.every_steps=7"]).stage_hash("train") == \
        load("jobs/demo.yaml").stage_hash("train")


def test_spectral_figures_of_one_output_for_every_input_are_zero():
    real = torch.randn(3, 8, 20)
    assert norms.spectral_figures(real, real) == pytest.approx(
        {"mode/spectral_variance_ratio": 1.0, "mode/output_diversity_ratio": 1.0})
    constant = torch.randn(1, 8, 20).expand(3, 8, 20)
    assert norms.spectral_figures(real, constant)["mode/output_diversity_ratio"] == 0.0
    assert norms.spectral_figures(real, torch.zeros(3, 8, 20))["mode/spectral_variance_ratio"] == 0.0
    assert set(norms.spectral_figures(real[:1], real[:1])) == {"mode/spectral_variance_ratio"}


def test_clip_gradients_matches_clip_grad_norm_and_reports_each_network():
    torch.manual_seed(0)
    first, second = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    reference = [torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)]
    for copy, module in zip(reference, (first, second)):
        copy.load_state_dict(module.state_dict())
    inputs = torch.randn(5, 4)
    for modules in ((first, second), reference):
        modules[1](modules[0](inputs)).pow(2).sum().mul(100).backward()
    total = torch.nn.utils.clip_grad_norm_([p for m in reference for p in m.parameters()], 1.0)
    reported = norms.clip_gradients({"first": first, "second": second}, 1.0)
    assert math.hypot(reported["first"], reported["second"]) == pytest.approx(float(total), rel=1e-5)
    for clipped, expected in zip([p for m in (first, second) for p in m.parameters()],
                                 [p for m in reference for p in m.parameters()]):
        torch.testing.assert_close(clipped.grad, expected.grad)
