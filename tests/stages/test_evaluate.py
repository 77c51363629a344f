"""evaluate and samples on a briefly trained vocoder: reports, gates and exit codes, listening material."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import soundfile

from unitvox.config import load
from unitvox.stages import run_stage
from unitvox.layout import EVALUATE_JUNIT as JUNIT, EVALUATE_METRICS as METRICS, EVALUATE_SUMMARY as SUMMARY
from unitvox.store import LocalStore

SHRINK = ["tokenize.kmeans.k=20", "tokenize.kmeans.sample_frames=4000", "train.segment_seconds=0.25",
          "train.batch_size=4", "train.max_steps=2", "train.generator_warmup_steps=1", "train.validate_every=2",
          "train.validation_items=3", "train.sample_every=1000", "evaluate.speaker_embedder=mfcc_stats",
          "samples.count=2", "train.speaker.enabled=false", "train.generator.speaker_embedding_dim=0",
          "evaluate.gates.unit_match_min=null"]
SPEAKER = ["train.speaker.enabled=true", "train.generator.speaker_embedding_dim=64"]
# jobs/demo.yaml's gates on what independent listeners hear; a two-step generator fails them (tested below).
LISTENER_GATES_OFF = ["evaluate.gates.cer_max=null", "evaluate.gates.dnsmos_overall_min=null"]


def _trained(tokenized_run, factory, *overrides):
    root = factory.mktemp("trained") / "run"
    shutil.copytree(tokenized_run, root)
    store = LocalStore(str(root))
    run_stage(load("jobs/demo.yaml", [*SHRINK, *overrides]), store, "train")
    return root


@pytest.fixture(scope="module")
def trained_run(tokenized_run, tmp_path_factory):
    return _trained(tokenized_run, tmp_path_factory)


@pytest.fixture(scope="module")
def conditioned_run(tokenized_run, tmp_path_factory):
    return _trained(tokenized_run, tmp_path_factory, *SPEAKER)


def _evaluate(root, *overrides):
    argv = [sys.executable, "-m", "unitvox", "evaluate", "--config", "jobs/demo.yaml", "--run", str(root)]
    for override in [*SHRINK, *overrides]:
        argv += ["--set", override]
    return subprocess.run(argv, capture_output=True, text=True)


def test_evaluate_writes_reports_and_its_exit_code_follows_the_gates(trained_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    passing = _evaluate(root, "evaluate.gates.snr_db_min=-200", *LISTENER_GATES_OFF)
    assert passing.returncode == 0, passing.stderr
    metrics = json.loads((root / METRICS).read_text())
    held_out = json.loads((root / "train" / "split.json").read_text())["validation"]
    assert [row["utterance"] for row in metrics["utterances"]] == held_out[: len(metrics["utterances"])]
    assert {"snr_db", "mcd_mfcc_frames", "length_ratio", "speaker_similarity", "reference_rms_dbfs", "wer", "cer",
            "gpe", "vde", "ffe", "f0_rmse_cents", "dnsmos_overall", "mcd_dtw", "pesq", "stoi"} <= set(metrics["utterances"][0])
    original = metrics["original"]["summary"]
    assert original["wer_mean"] == 0.0 and original["ffe_mean"] == 0.0 and original["stoi_mean"] == 1.0
    assert 1.0 <= original["dnsmos_overall_mean"] <= 5.0
    assert any("ASR: pocketsphinx" in note for note in metrics["notes"])
    assert 0.95 < metrics["summary"]["length_ratio_mean"] <= 1.0
    assert "PASS" in (root / SUMMARY).read_text()

    failing = _evaluate(root, "evaluate.gates.snr_db_min=100", *LISTENER_GATES_OFF)
    assert failing.returncode == 3, "a failed gate exits 3, apart from a broken run's 1"
    assert "FAILED" in failing.stdout and "snr_db" in failing.stdout
    suite = ElementTree.parse(root / JUNIT).getroot()
    failures = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failures == ["snr_db_min"]
    again = _evaluate(root, "evaluate.gates.snr_db_min=100", *LISTENER_GATES_OFF)
    assert again.returncode == 3 and "skipped" in again.stdout, "an up-to-date failed evaluation still fails CI"


def test_an_untrained_generator_fails_the_demo_listener_gates(trained_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    result = _evaluate(root)  # jobs/demo.yaml's own gates (SHRINK only turns unit_match off)
    assert result.returncode == 3, result.stderr
    suite = ElementTree.parse(root / JUNIT).getroot()
    failures = {case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None}
    assert {"cer_max", "dnsmos_overall_min"} <= failures
    assert "length_ratio_min" not in failures, "the length is right: only the listeners catch it"
    metrics = json.loads((root / METRICS).read_text())
    resynthesis, original = metrics["summary"], metrics["original"]["summary"]
    assert resynthesis["cer_mean"] > original["cer_mean"] and resynthesis["dnsmos_overall_mean"] < original["dnsmos_overall_mean"]


def test_the_report_links_every_audio_file_and_loads_in_chromium(trained_run, tmp_path):
    from html.parser import HTMLParser

    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    assert _evaluate(root, *LISTENER_GATES_OFF).returncode == 0
    page = root / "evaluate" / "report.html"
    sources = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attributes: sources.extend(
        value for name, value in attributes if tag == "audio" and name == "src")
    parser.feed(page.read_text())
    held_out = json.loads((root / METRICS).read_text())["utterances"]
    assert len(sources) == 2 * len(held_out)
    assert all((page.parent / source).is_file() for source in sources)
    if shutil.which("chromium"):
        import headless_chromium

        assert headless_chromium.load(page).console == []
        assert headless_chromium.screenshot(page, tmp_path / "report.png").stat().st_size > 10_000


def test_samples_without_speaker_conditioning(trained_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(trained_run, root)
    store = LocalStore(str(root))
    run_stage(load("jobs/demo.yaml", SHRINK), store, "samples")
    folders = [p for p in (root / "samples").iterdir() if (p / "original.wav").exists()]
    assert len(folders) == 2
    for folder in folders:
        original, rate = soundfile.read(folder / "original.wav")
        reconstruction, _ = soundfile.read(folder / "reconstruction.wav")
        assert rate == 16000 and abs(len(reconstruction) - len(original)) < 320
        assert "no voice conversions" in json.loads((folder / "metadata.json").read_text())["note"]
    long_form = json.loads((root / "samples" / "long_form" / "metadata.json").read_text())
    assert long_form["segments"] and long_form["seconds"] > 0


def test_samples_with_voice_conversion(conditioned_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(conditioned_run, root)
    run_stage(load("jobs/demo.yaml", [*SHRINK, *SPEAKER]), LocalStore(str(root)), "samples")
    folder = next(p for p in (root / "samples").iterdir() if (p / "original.wav").exists())
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["conversions"] and all((folder / f"to_{s}.wav").exists() for s in metadata["conversions"])
    assert metadata["speaker"] not in metadata["conversions"]
    multi = next((root / "samples" / "multi_speaker").iterdir())
    voices = json.loads((multi / "metadata.json").read_text())["voices"]
    assert len(voices) >= 2 and all((multi / f"{v}.wav").exists() for v in voices)
    one, _ = soundfile.read(multi / f"{voices[0]}.wav")
    two, _ = soundfile.read(multi / f"{voices[1]}.wav")
    assert len(one) == len(two) and (abs(one - two)).max() > 0, "different voices must change the audio"
