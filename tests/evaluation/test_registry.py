"""The evaluation metric registry: every metric's direction, unit, gauge and gate keys in one table."""

import pytest

from unitvox.evaluation.registry import EVALUATION_METRICS, MetricSpec, gate_keys, register_metric, unknown_gate


def test_every_metric_has_a_direction_a_unit_and_distinct_gauge():
    gauges = [spec.gauge for spec in EVALUATION_METRICS.values()]
    assert len(set(gauges)) == len(gauges)
    for spec in EVALUATION_METRICS.values():
        assert spec.unit in ("dB", "ratio", "MOS", "cents", "Hz", ""), spec.name
        assert spec.help.endswith("."), spec.name
        assert spec.decibels == (spec.unit == "dB")


def test_the_figures_the_field_reports_are_registered():
    for name in ("wer", "cer", "gpe", "vde", "ffe", "f0_rmse_cents", "dnsmos_overall", "dnsmos_signal",
                 "dnsmos_background", "mcd_dtw", "pesq", "stoi", "speaker_eer", "mcd_mfcc_frames"):
        assert name in EVALUATION_METRICS
    assert not EVALUATION_METRICS["wer"].higher_is_better and EVALUATION_METRICS["pesq"].higher_is_better
    assert EVALUATION_METRICS["mcd_dtw"].decibels and EVALUATION_METRICS["dnsmos_overall"].reference_free


def test_gate_keys_are_mean_and_median_bounds():
    assert EVALUATION_METRICS["wer"].gate_keys() == ("wer_min", "wer_max", "wer_median_min", "wer_median_max")
    keys = gate_keys()
    assert keys["dnsmos_overall_median_min"] == ("dnsmos_overall", "median", "min")
    assert keys["stoi_max"] == ("stoi", "mean", "max")
    assert len(keys) == 4 * len(EVALUATION_METRICS)


def test_an_unknown_gate_message_names_the_key_and_the_metrics():
    message = unknown_gate("werr_max")
    assert "'werr_max'" in message and "wer" in message and "dnsmos_overall" in message


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        register_metric(MetricSpec("wer", "WER again", "ratio", False, "evaluate_other", "Another."))


def test_better_follows_the_direction():
    assert EVALUATION_METRICS["wer"].better(0.1, 0.2) and not EVALUATION_METRICS["wer"].better(0.2, 0.1)
    assert EVALUATION_METRICS["stoi"].better(0.9, 0.8)
