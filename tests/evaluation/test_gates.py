"""Quality gates: parsing from config, evaluation, summaries and the JSON, Markdown and JUnit writers."""

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from unitvox.evaluation.gates import (
    Gate,
    evaluate_gates,
    gates_exit_code,
    gates_from_config,
    junit_xml,
    metrics_json,
    summarise,
    summary_markdown,
)

ROWS = [
    {"utterance": "spk1-a", "snr_db": 14.0, "mcd_dtw": 4.0, "length_ratio": 1.0, "speaker_similarity": 0.9},
    {"utterance": "spk1-b", "snr_db": 10.0, "mcd_dtw": 6.0, "length_ratio": 0.99, "speaker_similarity": 0.8},
    {"utterance": "spk2-a", "snr_db": -3.0, "mcd_dtw": 9.0, "length_ratio": 1.0, "speaker_similarity": math.nan},
]


def test_gates_from_config_reads_metric_statistic_and_comparison():
    gates = gates_from_config({
        "snr_db_min": 10, "mcd_dtw_max": 8.5, "length_ratio_min": 0.98, "length_ratio_max": 1.02,
        "speaker_similarity_median_min": 0.75, "mcd_dtw_median_max": None,
    })
    assert gates == [
        Gate("snr_db", "min", 10.0),
        Gate("mcd_dtw", "max", 8.5),
        Gate("length_ratio", "min", 0.98),
        Gate("length_ratio", "max", 1.02),
        Gate("speaker_similarity", "min", 0.75, statistic="median"),
    ]
    assert [gate.key for gate in gates][-1] == "speaker_similarity_median_min"
    assert gates[0].summary_key == "snr_db_mean"


@pytest.mark.parametrize("key, message", [
    ("snr_db_minimum", "'snr_db_minimum': the key must end in _min or _max"),
    ("utmos_min", "'utmos_min': unknown metric 'utmos'"),
    ("snr_db_p90_min", "'snr_db_p90_min': unknown metric 'snr_db_p90'"),
    ("min", "'min': unknown metric ''"),
])
def test_gates_from_config_names_a_bad_key(key, message):
    with pytest.raises(ValueError, match=message):
        gates_from_config({key: 1.0})


@pytest.mark.parametrize("threshold", ["ten", True, math.nan, math.inf, [1]])
def test_gates_from_config_refuses_a_threshold_that_is_not_a_finite_number(threshold):
    with pytest.raises(ValueError, match="'snr_db_min': threshold must be a finite number"):
        gates_from_config({"snr_db_min": threshold})


def test_gates_from_config_refuses_a_minimum_above_the_maximum():
    with pytest.raises(ValueError, match="'length_ratio_min' = 1.1 is above 'length_ratio_max' = 1"):
        gates_from_config({"length_ratio_min": 1.1, "length_ratio_max": 1.0})


def test_summarise_gives_mean_median_and_counts_ignoring_nan():
    summary = summarise(ROWS + [{"utterance": "spk2-b", "snr_db": 5.0}])
    assert summary["count"] == 4
    assert summary["snr_db_mean"] == pytest.approx(6.5)
    assert summary["snr_db_median"] == pytest.approx(7.5)
    assert summary["speaker_similarity_mean"] == pytest.approx(0.85)
    assert summary["speaker_similarity_count"] == 2
    assert summary["speaker_similarity_nan_count"] == 2, "one NaN and one row without the metric"
    assert "utterance_mean" not in summary


def test_summarise_of_an_all_nan_metric_is_nan():
    summary = summarise([{"mcd_dtw": math.nan}, {"mcd_dtw": np.float32("nan")}])
    assert math.isnan(summary["mcd_dtw_mean"]) and math.isnan(summary["mcd_dtw_median"])
    assert summary["mcd_dtw_nan_count"] == 2


def test_gates_pass_and_fail_and_set_the_exit_code():
    summary = summarise(ROWS)
    passing = evaluate_gates(summary, gates_from_config({"snr_db_min": 5.0, "mcd_dtw_max": 8.0}))
    assert [result.passed for result in passing] == [True, True]
    assert gates_exit_code(passing) == 0

    results = evaluate_gates(summary, gates_from_config({"snr_db_median_min": 12.0, "mcd_dtw_max": 6.5}))
    assert [result.passed for result in results] == [False, True]
    assert results[0].value == pytest.approx(10.0)
    assert results[0].threshold == 12.0
    assert results[0].message == "snr_db_median = 10 is below the minimum 12"
    assert gates_exit_code(results) == 1


def test_bounds_are_inclusive():
    results = evaluate_gates({"mcd_dtw_mean": 6.0}, [Gate("mcd_dtw", "max", 6.0), Gate("mcd_dtw", "min", 6.0)])
    assert all(result.passed for result in results)


def test_no_gates_means_success():
    assert gates_exit_code(evaluate_gates({"snr_db_mean": -40.0}, [])) == 0


def test_a_missing_metric_fails_its_gate():
    (result,) = evaluate_gates({"snr_db_mean": 20.0}, gates_from_config({"speaker_similarity_min": 0.5}))
    assert not result.passed
    assert math.isnan(result.value)
    assert "speaker_similarity_mean is missing" in result.message


def test_a_nan_metric_fails_its_gate():
    summary = summarise([{"speaker_similarity": math.nan}])
    (result,) = evaluate_gates(summary, gates_from_config({"speaker_similarity_min": 0.5}))
    assert not result.passed
    assert "speaker_similarity_mean is NaN" in result.message


def failing_results():
    """Gate results on ROWS: mean SNR 7 < 15 and mean MCD 6.33 > 6 fail, mean length ratio 0.997 passes."""
    gates = gates_from_config({"snr_db_min": 15.0, "mcd_dtw_max": 6.0, "length_ratio_min": 0.9})
    return evaluate_gates(summarise(ROWS), gates)


def test_junit_xml_parses_with_one_case_per_gate_and_the_failures():
    results = failing_results()
    root = ET.fromstring(junit_xml(results, suite_name="vocoder.evaluate"))
    suite = root.find("testsuite")
    assert suite.get("name") == "vocoder.evaluate"
    assert suite.get("tests") == "3" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == ["snr_db_min", "mcd_dtw_max", "length_ratio_min"]
    failures = [case.find("failure") for case in cases]
    assert [failure is not None for failure in failures] == [True, True, False]
    assert failures[0].get("message") == "snr_db_mean = 7 is below the minimum 15"


def test_summary_markdown_has_plain_pass_fail_words_and_the_worst_utterances():
    results = failing_results()
    text = summary_markdown(summarise(ROWS), results, ROWS, title="Checkpoint 42", worst_count=2)
    assert text.startswith("# Checkpoint 42\n")
    assert "Result: FAIL (2 of 3 gates failed)" in text
    assert "| snr_db_min | FAIL | snr_db_mean = 7 is below the minimum 15 |" in text
    assert "| length_ratio_min | PASS |" in text
    assert "| snr_db | higher is better | - | 7.000 | 10.000 | 3 | 0 |" in text
    beside = summary_markdown(summarise(ROWS), results, ROWS, original_summary={"snr_db_mean": 99.0})
    assert "| snr_db | higher is better | 99.000 | 7.000 |" in beside
    worst = text.split("## Worst utterances by SNR")[1]
    assert worst.index("spk2-a") < worst.index("spk1-b")
    assert "spk1-a" not in worst, "only the two worst utterances are listed"


def test_summary_markdown_reports_success():
    results = evaluate_gates(summarise(ROWS), gates_from_config({"mcd_dtw_max": 10.0}))
    assert "Result: PASS (1 of 1 gates passed)" in summary_markdown(summarise(ROWS), results, ROWS)


def test_metrics_json_round_trips_with_nan_as_null():
    results = failing_results()
    document = json.loads(metrics_json(ROWS, summarise(ROWS), results))
    assert document["passed"] is False
    assert [gate["passed"] for gate in document["gates"]] == [False, False, True]
    assert document["summary"]["snr_db_mean"] == pytest.approx(7.0)
    assert document["utterances"][2]["speaker_similarity"] is None
    assert document["utterances"][0]["utterance"] == "spk1-a"
