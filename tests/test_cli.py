"""The command surface end to end: validate, stage commands, the pipeline and its skipping, S3 runs."""

import json
import os
import subprocess
import sys

import pytest

from unitvox.cli import main


# The demo config with training shrunk to two steps, so the whole pipeline runs in a test.
QUICK = ["--set", "train.max_steps=2", "--set", "train.generator_warmup_steps=1", "--set", "train.batch_size=4",
         "--set", "train.segment_seconds=0.25", "--set", "evaluate.speaker_embedder=mfcc_stats",
         "--set", "samples.count=1", "--set", "evaluate.gates.unit_match_min=null",
         "--set", "evaluate.gates.cer_max=null", "--set", "evaluate.gates.dnsmos_overall_min=null"]
ALL_STAGES = ("prepare", "tokenize", "bpe", "train", "evaluate", "samples")


def statuses(stdout):
    """Stage -> status from the pipeline's closing summary table."""
    table = stdout[stdout.rindex("stage      status"):].splitlines()[1:]
    return {line.split()[0]: line.split()[1] for line in table if not line.startswith("outputs")}


def unitvox(*args, env=None, check=True):
    completed = subprocess.run([sys.executable, "-m", "unitvox", *args], capture_output=True, text=True,
                               env={**os.environ, **(env or {})})
    if check and completed.returncode != 0:
        raise AssertionError(f"unitvox {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


def test_validate_and_config_errors(capsys):
    assert main(["validate", "--config", "jobs/base.yaml"]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", "--config", "jobs/base.yaml", "--set", "tokenize.kmeans.kk=1"]) == 2
    assert "tokenize.kmeans.kk: unknown key" in capsys.readouterr().err


def test_help_shows_examples():
    completed = unitvox("tokenize", "--help")
    assert "examples:" in completed.stdout and "--shard-index" in completed.stdout


def test_stage_without_input_fails_as_a_config_error(tmp_path):
    completed = unitvox("prepare", "--config", "jobs/base.yaml", "--run", str(tmp_path / "run"), check=False)
    assert completed.returncode == 2
    assert "prepare.input: not set" in completed.stderr


def test_tokenize_before_prepare_says_so(tmp_path):
    completed = unitvox("tokenize", "--config", "jobs/demo.yaml", "--run", str(tmp_path / "run"), check=False)
    assert completed.returncode == 1
    assert "run prepare first" in completed.stderr


def test_job_completion_index_picks_the_shard(prepared_run, tmp_path):
    completed = unitvox("prepare", "--config", "jobs/demo.yaml", "--run", str(tmp_path / "run"),
                        "--set", f"prepare.input={json.loads((prepared_run / 'prepare' / '_SUCCESS.json').read_text())['inputs']['sources']['input']}",
                        "--phase", "segment", env={"JOB_COMPLETION_INDEX": "1"})
    assert "shard 1/2" in completed.stdout


@pytest.mark.e2e
def test_pipeline_on_real_speech_then_everything_skipped(speech_corpus, tmp_path):
    run = tmp_path / "run"
    first = unitvox("pipeline", "--config", "jobs/demo.yaml", "--run", str(run), "--set", f"prepare.input={speech_corpus}",
                    *QUICK)
    assert statuses(first.stdout) == dict.fromkeys(ALL_STAGES, "ran")
    for stage in ALL_STAGES:
        record = json.loads((run / stage / "_SUCCESS.json").read_text())
        assert record["outputs"] and all(meta["sha256"] for meta in record["outputs"].values())
        assert record["versions"]["unitvox"]
    manifest = (run / "prepare" / "manifest.jsonl").read_text().splitlines()
    units = (run / "tokenize" / "units.jsonl").read_text().splitlines()
    assert len(manifest) == len(units) > 20
    assert json.loads((run / "bpe" / "motifs.json").read_text())["motifs"]
    assert (run / "config.yaml").is_file()

    assert (run / "evaluate" / "junit.xml").is_file() and (run / "samples" / "long_form" / "long_form.wav").is_file()
    # What `make demo` ends with: every diagnosis of the run, from its resolved config.
    diagnosed = unitvox("diagnose", "all", "--config", str(run / "config.yaml"), "--run", str(run))
    index = (run / "diagnose" / "report.md").read_text()
    for kind in ("data", "checkpoint", "embeddings", "training"):
        assert f"| {kind} | " in index and (run / "diagnose" / kind / "report.json").is_file()
        assert diagnosed.stdout.count(f"{kind}: ") >= 1
    assert "not run" not in index
    second = unitvox("pipeline", "--config", "jobs/demo.yaml", "--run", str(run), "--set", f"prepare.input={speech_corpus}",
                     *QUICK)
    assert statuses(second.stdout) == dict.fromkeys(ALL_STAGES, "skipped")

    changed = unitvox("pipeline", "--config", "jobs/demo.yaml", "--run", str(run), "--set", f"prepare.input={speech_corpus}",
                      *QUICK, "--set", "bpe.vocab_size=200", "--stages", "prepare,tokenize,bpe")
    assert "[prepare] skipped" in changed.stdout and "[tokenize] skipped" in changed.stdout
    assert "[bpe] running (config changed)" in changed.stdout


@pytest.mark.e2e
def test_pipeline_into_s3(speech_corpus, s3_bucket, tmp_path):
    from unitvox.store import open_store

    run = f"s3://{s3_bucket}/runs/exp1"
    unitvox("pipeline", "--config", "jobs/demo.yaml", "--run", run, "--set", f"prepare.input={speech_corpus}",
            "--set", "bpe.vocab_size=150", *QUICK)
    store = open_store(run)
    keys = set(store.list())
    assert {f"{stage}/_SUCCESS.json" for stage in ALL_STAGES} | {"bpe/motifs.json", "train/checkpoints/latest.pt"} <= keys
    assert any(key.startswith("prepare/audio/") and key.endswith(".flac") for key in keys)
    again = unitvox("pipeline", "--config", "jobs/demo.yaml", "--run", run, "--set", f"prepare.input={speech_corpus}",
                    "--set", "bpe.vocab_size=150", *QUICK)
    assert set(statuses(again.stdout).values()) == {"skipped"}


def test_make_demo_ends_with_the_diagnoses_of_the_demo_run():
    recipe = open("Makefile").read().split("\ndemo: install\n")[1].split("\n\n")[0]
    assert recipe.splitlines()[-1].strip() == "$(BIN)/unitvox diagnose all --config $(RUN)/config.yaml --run $(RUN)"


def test_stages_wait_for_their_inputs_only_when_told_to(monkeypatch):
    from unitvox import cli
    from unitvox.errors import IncompleteError

    attempts = []

    def not_ready_twice():
        attempts.append(1)
        if len(attempts) < 3:
            raise IncompleteError("tokenize fit: 1 of 2 sample shards missing")
        return "ran"

    monkeypatch.setattr(cli, "WAIT_POLL_SECONDS", 0.01)
    monkeypatch.delenv("UNITVOX_WAIT_FOR_INPUTS_SECONDS", raising=False)
    with pytest.raises(IncompleteError):
        cli._wait_for_inputs(not_ready_twice)
    assert len(attempts) == 1, "no wait by default"
    monkeypatch.setenv("UNITVOX_WAIT_FOR_INPUTS_SECONDS", "30")
    attempts.clear()
    assert cli._wait_for_inputs(not_ready_twice) == "ran" and len(attempts) == 3
    monkeypatch.setenv("UNITVOX_WAIT_FOR_INPUTS_SECONDS", "soon")
    with pytest.raises(cli.ConfigError, match="UNITVOX_WAIT_FOR_INPUTS_SECONDS"):
        cli._wait_for_inputs(not_ready_twice)
