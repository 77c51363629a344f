"""The monitoring objects in k8s/: alert rules pass promtool, and every query names catalogue metrics only.

Run: .venv/bin/python -m pytest tests/prometheus/test_alerts.py -q
(promtool comes with Debian's `prometheus` package: apt-get install prometheus)
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from unitvox.prometheus.catalogue import CATALOGUE, PREFIX
from system_tools import needs

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s" / "base"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
METRIC_NAME = re.compile(r"\bunitvox_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
TEMPLATE_LABEL = re.compile(r"\{\{\s*\$labels\.([a-z_]+)\s*\}\}")
needs_promtool = needs("promtool")


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _rules() -> list[dict]:
    return [rule for group in _load("prometheusrule.yaml")["spec"]["groups"] for rule in group["rules"]]


def _dashboard() -> dict:
    config_map = _load("grafana-dashboard.yaml")
    (text,) = config_map["data"].values()
    return json.loads(text)


def _dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", [])]
    for variable in _dashboard()["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            queries.append(variable["query"]["query"])
    return queries


def _unknown_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression that the catalogue does not export."""
    known = {spec.exported: spec.kind for spec in CATALOGUE.values()}
    unknown = set()
    for name in METRIC_NAME.findall(expression):
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if name in known or (base is not None and known.get(base) == "histogram"):
            continue
        unknown.add(name)
    return unknown


def test_the_name_check_catches_a_stray_metric():
    assert _unknown_names('rate(unitvox_train_loss{term="mel"}[5m]) + unitvox_train_los') == {"unitvox_train_los"}
    assert _unknown_names("unitvox_stage_items_done_count") == {"unitvox_stage_items_done_count"}, \
        "histogram suffixes only for histograms"


def test_every_alert_and_dashboard_query_uses_catalogue_metrics_only():
    expressions = [rule["expr"] for rule in _rules()] + _dashboard_queries()
    assert len(expressions) > 20
    for expression in expressions:
        assert METRIC_NAME.search(expression), f"no unitvox metric in {expression!r}"
        assert not _unknown_names(expression), f"{expression!r} names metrics the code does not export"


def test_alerts_are_complete_and_their_templates_use_their_own_labels():
    rules = _rules()
    assert {rule["alert"] for rule in rules} == {
        "UnitvoxTrainingHealthCritical", "UnitvoxTrainingNonFinite", "UnitvoxTrainingLossDiverging",
        "UnitvoxDiscriminatorDominance", "UnitvoxTrainingNoRecentCheckpoint", "UnitvoxStageNoProgress"}
    for rule in rules:
        assert rule["for"] and rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        grouped = set(re.findall(r"by \(([^)]*)\)", rule["expr"])[-1].replace(" ", "").split(","))
        for text in rule["annotations"].values():
            assert set(TEMPLATE_LABEL.findall(text)) <= grouped, f"{rule['alert']}: template label not in {grouped}"


def _render(template: str, labels: dict[str, str]) -> str:
    return TEMPLATE_LABEL.sub(lambda match: labels[match.group(1)], template)


def _unit_tests_with_annotations() -> dict:
    """alerts_test.yaml with each expected alert's annotations rendered from its rule."""
    annotations = {rule["alert"]: rule["annotations"] for rule in _rules()}
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"] = {name: _render(text, alert["exp_labels"])
                                            for name, text in annotations[check["alertname"]].items()}
    return tests


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules(tmp_path):
    groups = {"groups": _load("prometheusrule.yaml")["spec"]["groups"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(_unit_tests_with_annotations(), sort_keys=False))
    checked = subprocess.run(["promtool", "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = subprocess.run(["promtool", "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_promtool_unit_tests_fail_when_an_alert_is_wrong(tmp_path):
    groups = _load("prometheusrule.yaml")["spec"]["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        rule["expr"] = rule["expr"].replace(">= 2", ">= 3")  # critical can no longer fire
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(_unit_tests_with_annotations()))
    tested = subprocess.run(["promtool", "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert tested.returncode != 0 and "UnitvoxTrainingHealthCritical" in tested.stdout + tested.stderr


def test_pod_monitor_scrapes_the_training_pods_metrics_port():
    monitor = _load("podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["namespace"] == "unitvox"
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"] == {"app.kubernetes.io/name": "unitvox"}
    assert selector["matchExpressions"] == [{"key": "app.kubernetes.io/component", "operator": "In",
                                             "values": ["train", "ablate"]}], "ablation variants train too"
    assert [endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert monitor["spec"]["podTargetLabels"] == ["unitvox.dev/run", "unitvox.dev/stage", "unitvox.dev/variant"]
    rule = _load("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "unitvox"


def test_dashboard_compares_variants_and_covers_every_area():
    config_map = _load("grafana-dashboard.yaml")
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = _dashboard()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert {"run", "variant"} <= set(variables) and variables["variant"]["multi"]
    repeated = [panel for panel in dashboard["panels"] if panel.get("repeat") == "variant"]
    assert repeated and repeated[0]["repeatDirection"] == "h", "one panel per variant, side by side"
    queries = " ".join(_dashboard_queries())
    for area in ("unitvox_train_loss", "unitvox_train_health_status", "unitvox_train_health_signal",
                 "unitvox_train_grad_norm", "unitvox_train_samples_per_second", "unitvox_stage_items_done"):
        assert area in queries, f"no panel shows {area}"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "unitvox_run_info" not in target["expr"] or panel["type"] != "table":
                assert 'run=~"$run"' in target["expr"], f"panel {panel['title']!r} ignores the run variable"
    assert PREFIX == "unitvox_"
