"""diagnose data: planted short, quiet, silent and clipped files get their flags; the filter list leaves them out.

A planted run is a manifest of generated segments and a train/split.json holding out a validation
set, so each problem is exactly the one planted (prepare's own checks would reject most of them).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from synth import speech_like, write
from unitvox.audio import encode_flac
from unitvox.cli import main
from unitvox.config import ConfigError, load
from unitvox.diagnostics.data.data_diagnosis import FILES, FILTER, diagnose_data
from unitvox.diagnostics.data.snr import FLAGGED_FILES, OUTPUT_LEVEL
from unitvox.evaluation.gates import metrics_json, summarise
from unitvox.filterlist import parse_filter_list
from unitvox.stages import run_stage
from unitvox.layout import EVALUATE_METRICS as METRICS, MANIFEST, REJECTED, SPLIT
from unitvox.store import LocalStore

RATE = 16000
NORMAL_VALIDATION = ["normal_v1", "normal_v2"]
NORMAL_TRAINING = ["normal_t1", "normal_t2", "normal_t3"]
PLANTED = {"short": "too_short", "quiet": "too_quiet", "silent": "mostly_silent", "loud": "clipped"}
VALIDATION = ["short", "quiet", "silent", *NORMAL_VALIDATION]


def _silent(seconds: float, speech_seconds: float) -> np.ndarray:
    """A little speech, then near-silence (-70 dBFS) for the rest."""
    rest = np.random.default_rng(5).standard_normal(int((seconds - speech_seconds) * RATE)) * 10 ** (-70 / 20)
    return np.concatenate([speech_like(speech_seconds, seed=4), rest]).astype(np.float32)


def _planted_files() -> dict[str, np.ndarray]:
    files = {name: speech_like(3.0, seed=number) for number, name in enumerate(NORMAL_VALIDATION + NORMAL_TRAINING)}
    files["short"] = speech_like(0.4, seed=7)
    files["quiet"] = speech_like(3.0, seed=8, level_db=-50.0)
    files["silent"] = _silent(3.0, 0.5)
    files["loud"] = np.clip(speech_like(3.0, seed=9, level_db=-3.0), -1, 1)
    return files


@pytest.fixture(scope="module")
def planted_template(tmp_path_factory):
    """A run whose manifest lists normal and planted segments, with short, quiet and silent ones held out."""
    store = LocalStore(str(tmp_path_factory.mktemp("planted") / "run"))
    rows = []
    for number, (segment_id, samples) in enumerate(_planted_files().items()):
        speaker = f"speaker{number % 2}"
        key = f"prepare/audio/{speaker}/{segment_id}.flac"
        store.write_bytes(key, encode_flac(samples, RATE))
        rows.append({"id": segment_id, "audio": key, "speaker": speaker, "duration": round(len(samples) / RATE, 4)})
    store.write_jsonl(MANIFEST, rows)
    store.write_json(SPLIT, {"train": [row["id"] for row in rows if row["id"] not in VALIDATION],
                             "validation": VALIDATION})
    return store.root


@pytest.fixture
def planted_run(planted_template, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(planted_template, root)
    return LocalStore(str(root))


def _config(*overrides):
    return load("jobs/demo.yaml", list(overrides))


def _rows(store):
    return {row["id"]: row for row in store.read_jsonl(FILES)}


def _write_evaluation(store, rows):
    store.write_text(METRICS, metrics_json(rows, summarise(rows), []))


def _utterance(name, snr, reference_rms, gap=0.0):
    return {"utterance": name, "speaker": "speaker0", "duration": 3.0, "snr_db": snr, "mcd": 9.0,
            "reference_peak_dbfs": reference_rms + 12, "reference_rms_dbfs": reference_rms,
            "estimate_peak_dbfs": reference_rms + 12 + gap, "estimate_rms_dbfs": reference_rms + gap}


def test_each_planted_file_gets_its_flag_and_only_they_are_filtered(planted_run):
    diagnosis = diagnose_data(_config(), planted_run)
    rows = _rows(planted_run)
    for name, flag in PLANTED.items():
        assert flag in rows[name]["flags"], (name, rows[name])
    assert "too_quiet" not in rows["silent"]["flags"]
    assert all(rows[name]["flags"] == [] for name in NORMAL_VALIDATION + NORMAL_TRAINING)
    assert [rows[name]["split"] for name in VALIDATION] == ["validation"] * len(VALIDATION)

    text = planted_run.read_text(FILTER)
    assert text.startswith("# ")
    assert set(parse_filter_list(text)) == set(PLANTED)
    assert "short  # too_short" in text and "loud  # clipped" in text

    assert diagnosis.kind == "data" and diagnosis.status == "problem"
    assert diagnosis.verdict.startswith("3 of 5 validation files are flagged: too short 1, too quiet 1")
    assert "1 of 4 training files is flagged: clipped 1" in diagnosis.verdict
    url = planted_run.url(FILTER)
    assert any(f"--set prepare.exclude={url} --set train.exclude={url}" in finding for finding in diagnosis.findings)
    assert any("too_quiet (rms_db < -40, diagnose.data.min_rms_db): quiet" in f for f in diagnosis.findings)
    assert diagnosis.details["recommended_segment_seconds"] is None
    assert diagnosis.details["summary"]["validation"]["flags"]["mostly_silent"] >= 1


def test_heavy_padding_recommends_a_segment_length_most_files_reach(planted_run):
    diagnosis = diagnose_data(_config("train.segment_seconds=8.0"), planted_run)
    rows = _rows(planted_run)
    assert all("heavy_padding" in rows[name]["flags"] for name in NORMAL_VALIDATION + NORMAL_TRAINING)
    assert rows["normal_t1"]["padding_ratio"] == pytest.approx(1 - 3.0 / 8.0, abs=0.01)
    recommended = diagnosis.details["recommended_segment_seconds"]
    assert 2.5 <= recommended <= 3.0
    assert any(f"--set train.segment_seconds={recommended:g}" in finding for finding in diagnosis.findings)
    # Padding alone is fixed by the window, not by dropping files.
    assert set(parse_filter_list(planted_run.read_text(FILTER))) == set(PLANTED)


def test_negative_snr_of_quiet_and_silent_files_is_explained_by_the_data(planted_run):
    _write_evaluation(planted_run, [
        _utterance("quiet", -9.0, -50.0, gap=1.0), _utterance("silent", -12.0, -28.0, gap=-1.0),
        _utterance("short", 1.0, -20.0), _utterance("normal_v1", 4.0, -20.0), _utterance("normal_v2", 5.0, -21.0),
    ])
    diagnosis = diagnose_data(_config(), planted_run)
    snr = diagnosis.details["snr"]
    assert snr["is_negative"] and snr["negative"] == 2 and snr["snr_db_mean"] == pytest.approx(-2.2)
    assert snr["explained_by"] == [FLAGGED_FILES]
    assert snr["levels"]["reference"]["rms_dbfs"]["min"] == pytest.approx(-50.0)
    assert diagnosis.findings[0].startswith("Validation SNR is negative: mean -2.2 dB, 2 of 5 utterances below 0 dB")
    explained = next(f for f in diagnosis.findings if f.startswith("The data explains it"))
    assert "2 of 2 utterances with negative SNR are flagged files" in explained
    assert "(too quiet 1, mostly silent 2)" in explained
    assert "explained by the flagged files" in diagnosis.verdict
    assert "snr_levels.png" in diagnosis.figures


def test_an_output_20_db_too_loud_is_reported_as_a_level_mismatch(planted_run):
    _write_evaluation(planted_run, [_utterance("normal_v1", -19.0, -20.0, gap=20.0),
                                    _utterance("normal_v2", -18.5, -22.0, gap=20.0)])
    diagnosis = diagnose_data(_config(), planted_run)
    snr = diagnosis.details["snr"]
    assert snr["explained_by"] == [OUTPUT_LEVEL] and snr["level_gap_db"] == pytest.approx(20.0)
    loud = next(f for f in diagnosis.findings if f.startswith("Level explains it"))
    assert "20.0 dB louder than the input" in loud and "caps SNR at -19.1 dB" in loud
    assert "explained by the output level" in diagnosis.verdict


def test_an_unreadable_file_is_reported_not_fatal(planted_run):
    (planted_run.root / "prepare/audio/speaker0/normal_v1.flac").write_bytes(b"not audio at all")
    diagnosis = diagnose_data(_config(), planted_run)
    row = _rows(planted_run)["normal_v1"]
    assert row["flags"] == ["unreadable"] and row["error"].startswith("undecodable")
    assert diagnosis.status == "problem"
    assert any("cannot be read: normal_v1 (undecodable" in finding for finding in diagnosis.findings)
    assert "normal_v1" in parse_filter_list(planted_run.read_text(FILTER))


def test_without_a_split_the_one_train_would_make_is_read_first_and_max_items_bounds_it(planted_run):
    (planted_run.root / SPLIT).unlink()
    diagnosis = diagnose_data(_config("diagnose.data.max_items=3"), planted_run)
    read = diagnosis.details["read"]
    assert "train has not run" in read["validation_source"]
    assert read["read"] == 3 and read["stopped"]
    splits = [row["split"] for row in planted_run.read_jsonl(FILES)]
    assert len(splits) == 3 and splits == sorted(splits, key=lambda split: split != "validation")
    assert 1 <= splits.count("validation") <= 3


def test_raw_recordings_are_diagnosed_before_prepare(tmp_path):
    raw = tmp_path / "raw"
    write(raw / "alice" / "fine.wav", speech_like(3.0, seed=1))
    write(raw / "alice" / "whisper.wav", speech_like(3.0, seed=2, level_db=-55.0))
    store = LocalStore(str(tmp_path / "run"))
    diagnosis = diagnose_data(_config(f"prepare.input={raw}"), store)
    assert diagnosis.details["source"] == "raw"
    assert any(finding.startswith("prepare has not run") for finding in diagnosis.findings)
    assert parse_filter_list(store.read_text(FILTER)) == ["alice/whisper.wav"]
    advice = next(f for f in diagnosis.findings if f.startswith("Filter list"))
    assert "prepare.exclude" in advice and "train.exclude" not in advice
    assert diagnosis.verdict.startswith("1 of 2 recordings is flagged: too quiet 1")


def test_the_command_prints_findings_and_writes_the_report(planted_run, capsys):
    _write_evaluation(planted_run, [_utterance("quiet", -9.0, -50.0), _utterance("normal_v1", 4.0, -20.0)])
    code = main(["diagnose", "data", "--config", "jobs/demo.yaml", "--run", str(planted_run.root)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "data: PROBLEM: 3 of 5 validation files are flagged" in printed
    assert "  - " in printed and "train.exclude=" in printed
    folder = planted_run.root / "diagnose" / "data"
    for name in ("report.json", "report.md", "filter.txt", "files.jsonl", "distributions.png", "snr_levels.png"):
        assert (folder / name).is_file(), name
    assert (folder / "distributions.png").read_bytes().startswith(b"\x89PNG")
    report = json.loads((folder / "report.json").read_text())
    assert report["status"] == "problem" and report["filtered"] and report["thresholds"]["min_rms_db"] == -40.0
    markdown = (folder / "report.md").read_text()
    assert "## Flagged files" in markdown and "![" in markdown and "## Evaluation SNR" in markdown


@pytest.fixture
def recordings(tmp_path):
    raw = tmp_path / "raw"
    for number, name in enumerate(("alice/a.wav", "alice/b.wav", "bob/c.wav")):
        write(raw / name, speech_like(2.0, seed=number))
    return raw


def test_prepare_leaves_out_listed_segments_and_recordings(recordings, tmp_path):
    listing = tmp_path / "filter.txt"
    listing.write_text("# made by hand\n\na_000  # too_quiet\nalice/b.wav\n")
    store = LocalStore(str(tmp_path / "run"))
    config = _config(f"prepare.input={recordings}", f"prepare.exclude={listing}")
    run_stage(config, store, "prepare")
    assert [row["id"] for row in store.read_jsonl(MANIFEST)] == ["c_000"]
    rejected = {(row["segment"] or row["source"].rsplit("/", 1)[1]): row for row in store.read_jsonl(REJECTED)}
    assert rejected["a_000"]["reason"] == "excluded" and rejected["a_000"]["duration"] == pytest.approx(2.0)
    assert rejected["b.wav"]["reason"] == "excluded" and rejected["b.wav"]["segment"] is None

    listing.write_text("a_000\n")  # the same path, edited: prepare runs again and keeps b
    assert run_stage(config, store, "prepare").status == "ran"
    assert [row["id"] for row in store.read_jsonl(MANIFEST)] == ["b_000", "c_000"]


def test_a_missing_filter_list_is_a_config_error_naming_the_key(recordings, tmp_path):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(ConfigError, match=rf"prepare\.exclude: the filter list {missing} does not exist"):
        run_stage(_config(f"prepare.input={recordings}", f"prepare.exclude={missing}"),
                  LocalStore(str(tmp_path / "run")), "prepare")


def test_training_leaves_out_listed_segments_before_the_split(make_trainer, tokenized_run, tmp_path):
    ids = [row["id"] for row in LocalStore(str(tokenized_run)).read_jsonl(MANIFEST)]
    listing = tmp_path / "filter.txt"
    listing.write_text("".join(f"{segment_id}  # too_quiet\n" for segment_id in ids[:3]))
    def used(trainer):
        return {item.segment_id for dataset in (trainer.train_set, trainer.validation_set) for item in dataset.items}

    assert used(make_trainer()) & set(ids[:3])
    trainer = make_trainer(f"train.exclude={listing}")
    assert used(trainer) and not used(trainer) & set(ids[:3])
    split = trainer.store.read_json(SPLIT)
    assert not set(split["train"] + split["validation"]) & set(ids[:3])
    with pytest.raises(ConfigError, match=r"train\.exclude: the filter list .*absent\.txt does not exist"):
        make_trainer(f"train.exclude={tmp_path / 'absent.txt'}")


def test_filter_lists_drop_comments_and_blank_lines():
    text = "# header\n\nseg_001  # too_quiet\n  alice/take#2.wav  \n#seg_002\n"
    assert parse_filter_list(text) == ["seg_001", "alice/take#2.wav"]


def test_data_thresholds_are_checked_by_key():
    with pytest.raises(ConfigError, match=r"diagnose\.data\.segment_coverage"):
        _config("diagnose.data.segment_coverage=0")
    with pytest.raises(ConfigError, match=r"diagnose\.data\.max_padded_files_ratio"):
        _config("diagnose.data.max_padded_files_ratio=2")
