"""export, encode, vocode and resynthesize from the command line: round trips against the run, and bad input."""

import json

import numpy as np
import soundfile

from unitvox.cli import main
from unitvox.layout import MANIFEST, UNITS
from unitvox.stages.evaluate import held_out
from unitvox.store import LocalStore



def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reference_clip(run, segment_id, folder, config):
    """The speaker reference the samples stage gave this segment, as a float WAV (no requantising)."""
    _, references = held_out(LocalStore(str(run)), config)
    position = next(i for i, item in enumerate(references.items) if item.segment_id == segment_id)
    path = folder / "reference.wav"
    soundfile.write(path, references.reference(position), 16000, subtype="FLOAT")
    return path


def test_resynthesize_reproduces_the_runs_own_samples_reconstruction(exported, sampled_run, tmp_path,
                                                                     tiny_config):
    metadata = next(p for p in (sampled_run / "samples").glob("*/metadata.json") if p.parent.name not in
                    ("long_form", "multi_speaker"))
    segment = json.loads(metadata.read_text())["segment"]
    audio_key = next(r["audio"] for r in _rows(sampled_run / MANIFEST) if r["id"] == segment)
    out = tmp_path / "wavs"
    speaker = _reference_clip(sampled_run, segment, tmp_path, tiny_config())
    assert main(["resynthesize", "--model", str(exported), str(sampled_run / audio_key), "--out", str(out),
                 "--speaker", str(speaker)]) == 0
    ours, rate = soundfile.read(out / f"{segment}.wav", dtype="float32")
    theirs, _ = soundfile.read(metadata.parent / "reconstruction.wav", dtype="float32")
    assert rate == 16000 and np.abs(theirs).max() > 1e-3  # a real reconstruction, not silence
    # The same model on the same units and reference: equal up to one 16-bit step where float sums in
    # another thread layout round the other way.
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1.01 / 32768)
    assert np.mean(ours == theirs) > 0.999


def test_encode_gives_the_runs_units_for_its_prepared_segments(exported, sampled_run, tmp_path):
    speaker_folder = next((sampled_run / "prepare" / "audio").iterdir())
    out = tmp_path / "units.jsonl"
    assert main(["encode", "--model", str(exported), str(speaker_folder), "--out", str(out)]) == 0
    run_units = {row["id"]: row["units"] for row in _rows(sampled_run / UNITS)}
    encoded = _rows(out)
    assert len(encoded) == len(list(speaker_folder.glob("*.flac"))) >= 1
    for row in encoded:
        assert row["units"] == run_units[row["id"]], row["id"]
    deduplicated = tmp_path / "runs.jsonl"
    assert main(["encode", "--model", str(exported), str(speaker_folder), "--out", str(deduplicated),
                 "--deduplicate"]) == 0
    first = _rows(deduplicated)[0]
    assert np.repeat(first["units"], first["durations"]).tolist() == run_units[first["id"]]


def test_vocode_reads_the_runs_units_file_and_text(exported, sampled_run, tmp_path):
    row = _rows(sampled_run / UNITS)[0]
    text = tmp_path / "lm.txt"
    text.write_text(" ".join(map(str, row["units"][:40])) + "\n" + " ".join(map(str, row["units"][40:80])) + "\n")
    speaker = tmp_path / "voice.wav"
    soundfile.write(speaker, np.random.default_rng(0).uniform(-0.3, 0.3, 16000), 16000)
    out = tmp_path / "wavs"
    assert main(["vocode", "--model", str(sampled_run), "--units", str(sampled_run / UNITS), "--units", str(text),
                 "--out", str(out), "--speaker", str(speaker)]) == 0
    assert (out / f"{row['id']}.wav").exists()
    assert soundfile.info(out / "lm_0001.wav").frames == 40 * 320 and (out / "lm_0002.wav").exists()


def test_bad_recordings_are_named_and_skipped_and_the_rest_done(exported, sampled_run, tmp_path, capsys):
    empty, nothing = tmp_path / "empty.wav", tmp_path / "no_audio"
    empty.write_bytes(b"")
    nothing.mkdir()
    (nothing / "notes.txt").write_text("no audio here\n")
    good = next((sampled_run / "prepare" / "audio").rglob("*.flac"))
    out = tmp_path / "units.jsonl"
    code = main(["encode", "--model", str(exported), str(empty), str(nothing), str(good), "--out", str(out)])
    errors = capsys.readouterr().err
    assert code == 2
    assert "empty.wav: empty: empty file (0 bytes)" in errors
    assert f"{nothing}: no " in errors and "files under" in errors
    assert [row["id"] for row in _rows(out)] == [good.stem]


def test_bad_unit_lines_are_named_by_file_and_line_and_the_rest_vocoded(exported, tmp_path, capsys):
    units = tmp_path / "units.txt"
    units.write_text("1 2 3 4 5\n1 2 99 4\n1 two 3\n6 7 8 9\n")
    as_json = tmp_path / "units.jsonl"
    as_json.write_text('{"id": "fine", "units": [1, 2, 3]}\n{"id": "bad", "units": [1, 2.5]}\n')
    speaker = tmp_path / "voice.wav"
    soundfile.write(speaker, np.random.default_rng(0).uniform(-0.3, 0.3, 16000), 16000)
    out = tmp_path / "wavs"
    code = main(["vocode", "--model", str(exported), "--units", str(units), "--units", str(as_json),
                 "--out", str(out), "--speaker", str(speaker)])
    errors = capsys.readouterr().err
    assert code == 2
    assert "units.txt:2: unit 99 at position 2 is outside 0..19" in errors
    assert "units.txt:3: token 1 'two' is not an integer unit" in errors
    assert "units.jsonl:2: unit 1 2.5 is not an integer" in errors
    assert sorted(p.name for p in out.iterdir()) == ["fine.wav", "units_0001.wav", "units_0004.wav"]


def test_every_model_command_shows_examples_in_its_help(capsys):
    import pytest

    for name in ("export", "encode", "vocode", "resynthesize"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert f"unitvox {name} " in capsys.readouterr().out.split("examples:")[1]


def test_a_model_that_cannot_load_stops_before_writing(tmp_path, capsys):
    out = tmp_path / "units.jsonl"
    assert main(["encode", "--model", str(tmp_path / "nothing"), str(tmp_path), "--out", str(out)]) == 2
    assert "not a run root" in capsys.readouterr().err and not out.exists()
