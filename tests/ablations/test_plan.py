"""Ablation input checks: the shipped suite, bad variants and keys refused before anything runs, and the
index contract's errors.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/ablations/test_plan.py -q
"""

import pytest

from unitvox.ablations.plan import plan_ablation
from unitvox.ablations.run import run_variant, variant_store
from unitvox.ablations.suite import load_suite, parse_suite
from unitvox.cli import main
from unitvox.config import ConfigError, load
from unitvox.errors import IncompleteError
from unitvox.store import LocalStore, StoreError

ISSUE_VARIANTS = ["baseline", "no_contrastive", "no_gan", "low_contrastive", "high_contrastive", "no_hard_negative",
                  "more_negatives", "segment_1s", "segment_4s", "batch_4", "batch_16"]


def _suite(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("base", ["jobs/base.yaml", "jobs/demo.yaml"])
def test_the_shipped_speaker_suite_fits_the_shipped_configs(base):
    plan = plan_ablation(load(base), load_suite("jobs/ablations/speaker.yaml"))
    assert list(plan.selected) == ISSUE_VARIANTS
    assert all(plan.configs[name].metrics.variant == name for name in ISSUE_VARIANTS)
    assert all(config.train.speaker.enabled for config in plan.configs.values())  # the suite's common change
    assert plan.configs["no_gan"].train.lambdas.adversarial == 0.0
    assert plan.configs["batch_16"].train.batch_size == 16
    assert plan.configs["baseline"].stage_hash("train") != plan.configs["batch_4"].stage_hash("train")
    assert plan.upstream == ["prepare", "tokenize", "bpe"]


def test_only_picks_variants_in_the_suites_order_and_refuses_an_unknown_one(tmp_path):
    suite = load_suite("jobs/ablations/speaker.yaml")
    assert plan_ablation(load("jobs/demo.yaml"), suite, ["no_gan", "baseline"]).selected == ("baseline", "no_gan")
    with pytest.raises(ConfigError, match=r"jobs/ablations/speaker.yaml: no variant 'no_gann'"):
        plan_ablation(load("jobs/demo.yaml"), suite, ["baseline", "no_gann"])
    run = tmp_path / "run"
    code = main(["ablate", "--config", "jobs/demo.yaml", "--suite", "jobs/ablations/speaker.yaml", "--run", str(run),
                 "--only", "no_gann"])
    assert code == 2 and not run.exists()  # refused before anything ran or was written


def test_a_key_the_config_lacks_is_refused_naming_suite_variant_and_key(tmp_path, capsys):
    suite = _suite(tmp_path, "variants:\n  baseline: {}\n  typo:\n    train.lambdas.contrastiv: 0.0\n")
    with pytest.raises(ConfigError) as refused:
        plan_ablation(load("jobs/demo.yaml"), load_suite(suite), ["baseline"])  # checked even when left out
    assert f"{suite}: variant typo: train.lambdas.contrastiv: unknown key" in str(refused.value)
    run = tmp_path / "run"
    assert main(["ablate", "--config", "jobs/demo.yaml", "--suite", suite, "--run", str(run)]) == 2
    assert "train.lambdas.contrastiv" in capsys.readouterr().err and not run.exists()


def test_a_bad_value_and_a_change_to_a_shared_stage_are_refused(tmp_path):
    bad_value = _suite(tmp_path, "variants:\n  baseline: {}\n  empty:\n    train.batch_size: 0\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: variant empty: train.batch_size"):
        plan_ablation(load("jobs/demo.yaml"), load_suite(bad_value))
    shared = _suite(tmp_path, "variants:\n  baseline: {}\n  k_10:\n    tokenize.kmeans.k: 10\n", "shared.yaml")
    with pytest.raises(ConfigError, match=r"shared.yaml: variant k_10: changes tokenize\.\*, but every variant reads"):
        plan_ablation(load("jobs/demo.yaml"), load_suite(shared))


@pytest.mark.parametrize("compare, complaint", [
    ("key_metric: loss/disc", "compare.key_metric: 'loss/disc' is not one of"),
    ("baseline: nobody", "compare.baseline: no variant 'nobody'"),
    ("noise_treshold: 0.1", "compare.noise_treshold: unknown key"),
    ("noise_threshold: -1", "compare.noise_threshold: must not be negative"),
])
def test_bad_comparison_settings_are_refused_naming_the_key(compare, complaint):
    with pytest.raises(ConfigError, match=f"s.yaml: {complaint}"):
        parse_suite(f"compare:\n  {compare}\nvariants:\n  baseline: {{}}\n", "s.yaml")


def test_the_baseline_is_the_variant_named_so_else_the_first():
    assert parse_suite("variants:\n  a: {}\n  baseline: {}\n", "s.yaml").baseline == "baseline"
    assert parse_suite("variants:\n  a: {}\n  b: {}\n", "s.yaml").baseline == "a"
    assert parse_suite("compare: {baseline: b}\nvariants:\n  a: {}\n  b: {}\n", "s.yaml").baseline == "b"


def test_index_mode_waits_for_the_shared_stages_and_checks_its_index(tmp_path, monkeypatch, capsys):
    plan = plan_ablation(load("jobs/demo.yaml"), load_suite("jobs/ablations/speaker.yaml"))
    empty = LocalStore(str(tmp_path / "run"))
    with pytest.raises(IncompleteError, match=r"share the base run's prepare .* run it first"):
        run_variant(plan, empty, 3, 11)
    with pytest.raises(ConfigError, match=r"--shard-count 4: .* has 11 variants to run"):
        run_variant(plan, empty, 0, 4)
    with pytest.raises(ConfigError, match=r"--shard-index 11 is outside 0..10"):
        run_variant(plan, empty, 11, 11)
    argv = ["ablate", "--config", "jobs/demo.yaml", "--suite", "jobs/ablations/speaker.yaml", "--run", empty.uri,
            "--shard-count", "11"]
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert main(argv) == 2 and "set JOB_COMPLETION_INDEX" in capsys.readouterr().err
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert main(argv) == 1 and "not ready" in capsys.readouterr().err


def test_a_variant_reads_the_shared_stages_and_writes_only_its_own_area(tmp_path):
    root = LocalStore(str(tmp_path / "run"))
    root.write_text("tokenize/units.jsonl", "{}\n")
    root.write_text("train/_SUCCESS.json", "{}")  # a base run's training must stay invisible to a variant
    store = variant_store(root, "no_gan", ["prepare", "tokenize", "bpe"])
    assert store.read_text("tokenize/units.jsonl") == "{}\n"
    assert not store.exists("train/_SUCCESS.json")
    store.write_text("train/log.txt", "mine")
    assert (tmp_path / "run/ablations/no_gan/train/log.txt").read_text() == "mine"
    with pytest.raises(StoreError, match="read-only"):
        store.write_text("tokenize/units.jsonl", "")
