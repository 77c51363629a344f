"""Refuse early: a missing package, model folder or S3 endpoint stops validate, a stage and the pipeline
before any work, naming the config key, the package and how to install it.

Run: .venv/bin/python -m pytest tests/test_preflight.py -q
"""

import importlib.abc
import socket
import sys
import time

import pytest

from unitvox import exitcodes, preflight
from unitvox.cli import main
from unitvox.config import load


class Refuse(importlib.abc.MetaPathFinder):
    """An import hook that makes `names` look uninstalled, to find_spec and to import alike."""

    def __init__(self, *names: str):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def without_resemblyzer(monkeypatch):
    for name in [name for name in sys.modules if name.split(".")[0] == "resemblyzer"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Refuse("resemblyzer"), *sys.meta_path])


def _nothing_under(root) -> bool:
    return not root.exists() or not any(root.rglob("*"))


def test_the_import_hook_hides_resemblyzer(without_resemblyzer):
    assert preflight.is_missing("resemblyzer")
    assert not preflight.is_missing("json")
    with pytest.raises(ImportError):
        import resemblyzer  # noqa: F401


def test_missing_resemblyzer_is_refused_by_validate_naming_key_package_and_install(without_resemblyzer, capsys):
    assert main(["validate", "--config", "jobs/demo.yaml"]) == exitcodes.CONFIG
    error = capsys.readouterr().err
    assert "evaluate.speaker_embedder: resemblyzer needs the package 'resemblyzer'" in error
    assert "pip install --no-deps resemblyzer webrtcvad-wheels" in error
    assert "mfcc_stats" in error  # what works without it
    assert main(["validate", "--config", "jobs/demo.yaml", "--set", "evaluate.speaker_embedder=mfcc_stats",
                 "--set", "diagnose.embeddings.embedder=mfcc_stats", "--set", "train.speaker.encoder=learned"]) == 0


def test_missing_resemblyzer_refuses_the_pipeline_before_its_first_stage(without_resemblyzer, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["pipeline", "--config", "jobs/demo.yaml", "--run", str(run),
                 "--set", f"prepare.input={tmp_path / 'corpus'}"])
    assert code == exitcodes.CONFIG
    assert "evaluate.speaker_embedder" in capsys.readouterr().err
    assert _nothing_under(run), "nothing may be written before the refusal"


def test_missing_resemblyzer_refuses_the_evaluate_stage_before_it_waits_for_inputs(without_resemblyzer, tmp_path,
                                                                                     capsys):
    run = tmp_path / "run"
    assert main(["evaluate", "--config", "jobs/demo.yaml", "--run", str(run)]) == exitcodes.CONFIG
    assert "evaluate.speaker_embedder: resemblyzer needs" in capsys.readouterr().err
    assert _nothing_under(run)


def test_a_stage_checks_only_what_it_needs(without_resemblyzer):
    config = load("jobs/demo.yaml", ["train.speaker.encoder=learned"])
    preflight.check(config, ("prepare", "tokenize", "bpe", "train", "samples"))  # none of them embeds speakers
    with pytest.raises(preflight.PreflightError, match="train.speaker.encoder: resemblyzer needs"):
        preflight.check(load("jobs/demo.yaml", ["train.speaker.enabled=true", "train.speaker.encoder=resemblyzer",
                                                "train.generator.speaker_embedding_dim=64"]), ("train",))


def test_a_missing_model_folder_is_refused_before_tokenize_writes_anything(tmp_path, capsys):
    run, missing = tmp_path / "run", tmp_path / "models" / "xlsr"
    model = ["--set", "tokenize.features.extractor=ssl", "--set", f"tokenize.features.model={missing}"]
    assert main(["validate", "--config", "jobs/demo.yaml", *model]) == exitcodes.CONFIG
    assert f"tokenize.features.model: the model folder {missing} does not exist" in capsys.readouterr().err
    assert main(["tokenize", "--config", "jobs/demo.yaml", "--run", str(run), *model]) == exitcodes.CONFIG
    assert "tokenize.features.model" in capsys.readouterr().err
    assert _nothing_under(run)
    missing.mkdir(parents=True)  # a folder, but not one save_pretrained wrote
    assert main(["validate", "--config", "jobs/demo.yaml", *model]) == exitcodes.CONFIG
    assert "has no config.json" in capsys.readouterr().err


def test_hub_names_are_not_taken_for_folders():
    assert not preflight.is_local_path("facebook/wav2vec2-large-xlsr-53")
    assert preflight.is_local_path("./models/xlsr") and preflight.is_local_path("/models/xlsr")
    assert preflight.is_local_path("models/facebook/xlsr")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_is_refused_at_once(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    started = time.monotonic()
    code = main(["prepare", "--config", "jobs/demo.yaml", "--run", "s3://unitvox-nowhere/run",
                 "--set", f"prepare.input={corpus}"])
    assert time.monotonic() - started < 20, "the probe must not spend the store's whole retry budget"
    assert code == exitcodes.FAILED  # a network that comes back may answer: a Job may retry this one
    error = capsys.readouterr().err
    assert "--run s3://unitvox-nowhere/run" in error and "unreachable" in error and "AWS_ENDPOINT_URL" in error
    assert not any(corpus.iterdir())
    assert main(["validate", "--config", "jobs/demo.yaml", "--run", "s3://unitvox-nowhere/run"]) == exitcodes.FAILED


def test_a_missing_bucket_is_refused_as_a_config_error(s3_environment, tmp_path, capsys):
    assert main(["validate", "--config", "jobs/demo.yaml", "--run", "s3://unitvox-no-such-bucket/run"]) \
        == exitcodes.CONFIG
    assert "bucket 'unitvox-no-such-bucket' does not exist" in capsys.readouterr().err


def test_an_existing_bucket_passes(s3_bucket, capsys):
    assert main(["validate", "--config", "jobs/demo.yaml", "--run", f"s3://{s3_bucket}/run"]) == 0
    assert f"valid for s3://{s3_bucket}/run" in capsys.readouterr().out
