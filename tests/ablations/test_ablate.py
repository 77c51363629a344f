"""unitvox ablate end to end on the shipped tiny config shrunk to a few steps: two variants trained in
parallel subprocesses, the comparison, --only, --compare-only, and the Indexed Job's index contract.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/ablations/test_ablate.py -q
"""

import contextlib
import io
import json
import shutil

import pytest

from unitvox.cli import main
from unitvox.config import load

# The demo config shrunk to 20 mel-only steps; k and the corpus match the tokenized_run fixture.
STEPS = 20
SHRINK = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", "train.segment_seconds=0.25",
          "train.batch_size=4", f"train.max_steps={STEPS}", f"train.generator_warmup_steps={STEPS}",
          "train.validate_every=5", f"train.checkpoint_every={STEPS}", "train.log_every=2", "train.sample_every=1000",
          "train.validation_items=2", "train.health.stop_on_critical=false", "evaluate.speaker_embedder=mfcc_stats",
          "evaluate.max_items=2", "metrics.port=0"]
# slow_lr is worse by construction: at this learning rate the generator barely moves in 20 steps.
# Twenty steps make babble either way, so the default judge (CER) could not tell them apart: judge the mel.
SUITE = """name: tiny
compare: {key_metric: validation/mel_best}
variants:
  baseline: {}
  slow_lr:
    train.lr_generator: 1.0e-6
  never_run:
    train.batch_size: 2
"""


def _ablate(run, suite, corpus, *extra):
    argv = ["ablate", "--config", "jobs/demo.yaml", "--suite", str(suite), "--run", str(run),
            "--set", f"prepare.input={corpus}"]
    for override in SHRINK:
        argv += ["--set", override]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([*argv, *extra])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def ablated(tokenized_run, speech_corpus, tmp_path_factory):
    """A run where `ablate --only baseline slow_lr` has finished (bpe, not in the fixture, runs first)."""
    folder = tmp_path_factory.mktemp("ablate")
    suite = folder / "tiny.yaml"
    suite.write_text(SUITE)
    run = folder / "run"
    shutil.copytree(tokenized_run, run)
    code, printed = _ablate(run, suite, speech_corpus, "--only", "baseline", "slow_lr")
    assert code == 0, printed
    return run, suite, printed


@pytest.mark.e2e
def test_two_variant_ablation_names_the_better_variant(ablated):
    run, _, printed = ablated
    comparison = json.loads((run / "ablations/comparison.json").read_text())
    variants = {v["name"]: v for v in comparison["variants"]}
    assert comparison["best_variant"] == "baseline"
    assert set(variants) == {"baseline", "slow_lr"}  # --only: the comparison covers what was asked for
    slow = variants["slow_lr"]
    assert (slow["verdict"], slow["direction"]) == ("matters", "worse")
    assert slow["metrics"]["validation/mel_best"] > variants["baseline"]["metrics"]["validation/mel_best"]
    relative = slow["difference_from_baseline"]["validation/mel_best"]["relative"]
    assert relative > comparison["settings"]["noise_threshold"]
    assert {"evaluate/snr_db", "evaluate/mcd_mfcc_frames", "evaluate/unit_match", "loss/mel"} <= set(slow["metrics"])
    assert "Best variant: baseline" in printed and "slow_lr matters" in printed and "worse than baseline" in printed
    report = (run / "ablations/report.md").read_text()
    assert "| slow_lr | `train.lr_generator=1.0e-06` | 20 |" in report and "matters (worse)" in report
    assert "![" in report and (run / "ablations/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_each_variant_trains_in_its_own_area_on_the_shared_upstream(ablated):
    run, _, _ = ablated
    for name, learning_rate in (("baseline", load("jobs/demo.yaml").train.lr_generator), ("slow_lr", 1e-6)):
        area = run / "ablations" / name
        assert load(str(area / "config.yaml")).train.lr_generator == pytest.approx(learning_rate)
        assert load(str(area / "config.yaml")).metrics.variant == name
        for key in ("train/_SUCCESS.json", "train/checkpoints/latest.pt", "train/training_log.jsonl",
                    "evaluate/_SUCCESS.json", "evaluate/metrics.json"):
            assert (area / key).is_file(), key
        assert not any((area / stage).exists() for stage in ("prepare", "tokenize", "bpe"))
    assert not (run / "ablations/never_run").exists()  # left out by --only
    assert not (run / "train").exists()  # nothing trains at the run root
    assert (run / "bpe/_SUCCESS.json").is_file()  # the missing shared stage ran once, with the base config
    assert load(str(run / "ablations/config.yaml")).train.max_steps == STEPS


@pytest.mark.e2e
def test_compare_only_lists_an_unfinished_variant_as_missing(ablated, speech_corpus):
    run, suite, _ = ablated
    code, printed = _ablate(run, suite, speech_corpus, "--compare-only")
    assert code == 0
    comparison = json.loads((run / "ablations/comparison.json").read_text())
    assert comparison["missing"] == {"never_run": "not started"}
    assert comparison["best_variant"] == "baseline"
    assert "Not compared: never_run (not started)." in printed
    assert not (run / "ablations/never_run").exists()  # compare-only trains nothing


@pytest.mark.e2e
def test_job_completion_index_trains_exactly_that_variant(ablated, speech_corpus, tmp_path, monkeypatch):
    source, suite, _ = ablated
    run = tmp_path / "run"
    shutil.copytree(source, run)
    finished = {name: (run / f"ablations/{name}/train/_SUCCESS.json").read_text() for name in ("baseline", "slow_lr")}
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    code, printed = _ablate(run, suite, speech_corpus, "--shard-count", "3")  # what pod 2 of the Indexed Job runs
    assert code == 0, printed
    assert "variant never_run: train ran" in printed
    assert (run / "ablations/never_run/train/_SUCCESS.json").is_file()
    assert load(str(run / "ablations/never_run/config.yaml")).train.batch_size == 2
    for name, record in finished.items():
        assert (run / f"ablations/{name}/train/_SUCCESS.json").read_text() == record
    # The last variant to finish writes the comparison of the whole suite.
    comparison = json.loads((run / "ablations/comparison.json").read_text())
    assert comparison["missing"] == {} and len(comparison["variants"]) == 3

    code, printed = _ablate(run, suite, speech_corpus, "--only", "baseline", "slow_lr", "--shard-index", "1")
    assert code == 0 and "variant slow_lr: train skipped" in printed


@pytest.mark.e2e
def test_a_variant_whose_values_changed_trains_again_from_scratch(ablated, speech_corpus, tmp_path):
    source, suite, _ = ablated
    run = tmp_path / "run"
    shutil.copytree(source, run)
    edited = tmp_path / "edited.yaml"
    edited.write_text(SUITE.replace("1.0e-6", "1.0e-5"))
    area = run / "ablations/slow_lr"
    before = json.loads((area / "train/_SUCCESS.json").read_text())["config_hash"]
    old_log = (area / "train/training_log.jsonl").read_text()
    code, printed = _ablate(run, edited, speech_corpus, "--only", "slow_lr", "--shard-index", "0")
    assert code == 0 and "variant slow_lr: train ran" in printed and "evaluate ran" in printed
    # Resuming the old final checkpoint would take no step and leave the old log as it was.
    new_log = (area / "train/training_log.jsonl").read_text()
    assert new_log != old_log and len(new_log.splitlines()) == len(old_log.splitlines())
    assert json.loads((area / "train/_SUCCESS.json").read_text())["config_hash"] != before
    assert load(str(area / "config.yaml")).train.lr_generator == pytest.approx(1e-5)
